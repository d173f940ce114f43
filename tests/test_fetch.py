"""Starting where users start: a published model's name, an address, a hub name; through the commands.

The network is the fake hub (``fixtures/fake_hub.py``, the ``online`` fixture): huggingface_hub is pointed at it
with ``HF_ENDPOINT``, and it serves plain files for address downloads. Every other test runs with
``HF_HUB_OFFLINE=1``; so do the tests here that say so, and then the server must see no request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from converters.ast import variants
from converters.ast.conversion import SAMPLE_REPO
from converters.ast.labels import HUB_LABEL_REPO, id2label
from converters.ast.variants import AUDIOSET_SAMPLE, BY_NAME
from converters.fetch import Fetcher, download, torch_hub_dir
from converters.s3prl.example import S3PRLCase
from converters.s3prl.families import FAMILIES, Head
from fixtures import commands
from fixtures.commands import assert_refused, check_result, final_message
from fixtures.inputs import SPEECH

AST, S3PRL = "convert-ast-checkpoint", "convert-s3prl-checkpoint"
TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]


@pytest.fixture
def published(online: Any, ast_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> str:
    """The 10-10 model's original at an address of the fake hub's, as the published one is at Dropbox's."""
    url = online.add_file(TENTEN.checkpoint_filename, ast_checkpoint(TENTEN).read_bytes())
    monkeypatch.setitem(variants.BY_NAME, TENTEN.name, dataclasses.replace(TENTEN, url=url))
    return url


def cached_originals() -> list[str]:
    directory = torch_hub_dir() / "checkpoints"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_torch_hub_dir_is_torchs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch.hub

    for variables in ({"TORCH_HOME": str(tmp_path / "t")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {}):
        for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        assert torch_hub_dir() == Path(torch.hub.get_dir())


def test_the_seeds_command_line_fetches_the_original_and_the_checks_inputs(
    published: str, online: Any, tmp_path: Path
) -> None:
    """``--model_name NAME --pytorch_dump_folder_path OUT``, as the seed script ran: the original is fetched into
    torch.hub's cache, the sample recording and the label file from the hub; the synthetic checkpoint is refused at
    the published slice, as the seed refused it, and the labels check passes."""
    online.add_repo(SAMPLE_REPO, {AUDIOSET_SAMPLE: SPEECH.read_bytes()}, kind="dataset")
    labels = json.dumps(id2label(TENTEN.dataset)).encode()
    online.add_repo(HUB_LABEL_REPO, {"audioset-id2label.json": labels}, kind="dataset")
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--pytorch_dump_folder_path", str(output), "--report",
                          str(tmp_path / "report"))  # fmt: skip
    assert_refused(result, output, "check test_logits_match_the_published_slice failed: logits[0, :3] = ")
    assert check_result(result.stdout, "test_labels_agree_with_the_hub_label_file") == "passed"
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert cached_originals() == [TENTEN.checkpoint_filename]
    fetched = json.loads((tmp_path / "report" / "report.json").read_text())["fetched"]
    addresses = {item["address"]: item for item in fetched}
    assert addresses[published]["how"] == "downloaded" and len(addresses[published]["sha256"]) == 64
    assert f"hub:datasets/{SAMPLE_REPO}/{AUDIOSET_SAMPLE}" in addresses
    assert f"fetched {published} into " in " ".join(result.stdout.split())
    assert "%|" not in result.stderr  # no progress bar in a pipe


def test_a_seed_users_torch_hub_cache_is_found_as_it_is(
    published: str, online: Any, ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    """The original already where torch.hub.load_state_dict_from_url left it: nothing is fetched."""
    cache = torch_hub_dir() / "checkpoints"
    cache.mkdir(parents=True)
    (cache / TENTEN.checkpoint_filename).write_bytes(ast_checkpoint(TENTEN).read_bytes())
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--pytorch_dump_folder_path", str(output))
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert ("GET", f"/files/{TENTEN.checkpoint_filename}") not in online.requests


def test_an_address_is_downloaded(online: Any, ast_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    url = online.add_file("best_audio_model.pth", ast_checkpoint(TENTEN).read_bytes())
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--checkpoint_path", url, "--pytorch_dump_folder_path",
                          str(output))  # fmt: skip
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    assert cached_originals() == ["best_audio_model.pth"]


def test_a_truncated_download_is_refused_by_the_loader_and_not_kept(
    published: str, online: Any, tmp_path: Path
) -> None:
    """The server sends a shorter file, its length saying so: the download is whole as far as it can tell; the
    loader refuses the file, which is removed from the cache and named."""
    online.faults[f"/files/{TENTEN.checkpoint_filename}"] = "truncate"
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, "check test_source_loads_safely failed:",
                   f"the file fetched from {published} was removed from the cache")  # fmt: skip
    assert cached_originals() == []


def test_an_interrupted_download_leaves_nothing(published: str, online: Any, tmp_path: Path) -> None:
    online.faults[f"/files/{TENTEN.checkpoint_filename}"] = "interrupt"
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, f"--model_name {TENTEN.name}'s original: {published}: the download ended after ",
                   "nothing was kept")  # fmt: skip
    assert cached_originals() == []
    assert not any((torch_hub_dir() / "checkpoints").glob(".*partial")) if cached_originals() else True


def test_a_full_disk_while_downloading_keeps_nothing(
    online: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = online.add_file("big.pth", b"x" * 3_000_000)
    real_open = Path.open

    def full(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode and self.name.endswith(".partial"):

            def write(data: bytes) -> int:
                raise OSError(28, os.strerror(28))

            handle.write = write  # type: ignore[method-assign,assignment]
        return handle

    monkeypatch.setattr(Path, "open", full)
    target = tmp_path / "cache" / "big.pth"
    with pytest.raises(Exception, match=r"no space left on device while writing .*; nothing was kept"):
        download(url, target)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_base_model_and_a_verified_directory_by_hub_name(
    weights: str, online: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Only the files the run needs are fetched: config.json and the weights (the base model's extractor is
    never read); the verified directory's extractor too. A directory with only pytorch_model.bin is read
    safely (weights only)."""
    import transformers

    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    output = tmp_path / "out"
    written = commands.run(S3PRL, "--base_model_name", str(case.base), "--checkpoint_path", str(case.checkpoint),
                           "--model_dump_path", str(output))  # fmt: skip
    assert written.returncode == 0, written.stdout[-3000:]
    base = {"config.json": (case.base / "config.json").read_bytes(), "preprocessor_config.json": b"{}"}
    directory = {name: (output / name).read_bytes() for name in ("config.json", "preprocessor_config.json")}
    if weights == "model.safetensors":
        base[weights] = (case.base / weights).read_bytes()
        directory[weights] = (output / weights).read_bytes()
    else:  # as transformers writes it without safetensors
        for source, files in ((case.base, base), (output, directory)):
            model = transformers.AutoModel.from_pretrained(source) if source == case.base else None
            state = load_file(source / "model.safetensors") if model is None else model.state_dict()
            pickled = tmp_path / f"{len(files)}.bin"
            torch.save(state, pickled)
            files[weights] = pickled.read_bytes()
    online.add_repo("someone/wav2vec2-base", base)
    online.add_repo("someone/wav2vec2-base-ks", directory)
    result = commands.run(S3PRL, "--base_model_name", "someone/wav2vec2-base", "--checkpoint_path",
                          str(case.checkpoint), "--verify", "someone/wav2vec2-base-ks")  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    asked = {path for method, path in online.requests if method == "GET"}
    assert "/someone/wav2vec2-base/resolve/main/preprocessor_config.json" not in asked
    assert "/someone/wav2vec2-base-ks/resolve/main/preprocessor_config.json" in asked


@pytest.mark.parametrize(("setup", "name", "words"), [
    (lambda hub: None, "nobody/nothing", "hub model 'nobody/nothing' was not found (404)"),
    (lambda hub: hub.add_repo("someone/private", {"config.json": b"{}"}, private=True), "someone/private",
     "hub model 'someone/private' was not found (401): it does not exist, or it is private and this run has no "
     "access to it: log in (hf auth login) or set HF_TOKEN"),
    (lambda hub: hub.add_repo("someone/gated", {"config.json": b"{}"}, gated=True), "someone/gated",
     "access to hub model 'someone/gated' was refused (403): it is gated"),
    (lambda hub: hub.add_repo("someone/empty", {"config.json": b"{}"}), "someone/empty",
     "hub model 'someone/empty' has no weights file (model.safetensors, model.safetensors.index.json, "
     "pytorch_model.bin, pytorch_model.bin.index.json)"),
])  # fmt: skip
def test_a_hub_model_that_cannot_be_had_is_named(
    setup: Callable[[Any], object], name: str, words: str, online: Any, s3prl_case: Callable[..., S3PRLCase],
    tmp_path: Path,
) -> None:  # fmt: skip
    setup(online)
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    output = tmp_path / "out"
    result = commands.run(S3PRL, "--base_model_name", name, "--checkpoint_path", str(case.checkpoint),
                          "--model_dump_path", str(output))  # fmt: skip
    assert_refused(result, output, f"--base_model_name {name!r}: not a local directory, and ", words)


def test_a_private_model_is_fetched_with_the_users_token(
    online: Any, s3prl_case: Callable[..., S3PRLCase], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    files = {name: (case.base / name).read_bytes() for name in ("config.json", "model.safetensors")}
    online.add_repo("someone/private-base", files, private=True)
    monkeypatch.setenv("HF_TOKEN", online.token)
    output = tmp_path / "out"
    result = commands.run(S3PRL, "--base_model_name", "someone/private-base", "--checkpoint_path",
                          str(case.checkpoint), "--model_dump_path", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_a_revision_pins_the_hub_models(online: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path) -> None:
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    files = {name: (case.base / name).read_bytes() for name in ("config.json", "model.safetensors")}
    repo = online.add_repo("someone/base", files)
    output = tmp_path / "out"
    arguments = ("--checkpoint_path", str(case.checkpoint), "--model_dump_path", str(output))
    result = commands.run(S3PRL, "--base_model_name", "someone/base", "--revision", "v9", *arguments)
    assert_refused(result, output, "hub model 'someone/base' has no revision 'v9'")
    online.requests.clear()
    result = commands.run(S3PRL, "--base_model_name", f"someone/base@{repo.sha}", *arguments)
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(f"/resolve/{repo.sha}/" in path for _, path in online.requests)


def test_offline_sends_no_request_and_names_what_is_not_cached(
    published: str, online: Any, monkeypatch: pytest.MonkeyPatch, s3prl_case: Callable[..., S3PRLCase],
    tmp_path: Path,
) -> None:  # fmt: skip
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", TENTEN.name, "--pytorch_dump_folder_path", str(output))
    assert_refused(result, output, f"{published} is not in {torch_hub_dir() / 'checkpoints'}, and HF_HUB_OFFLINE=1 "
                   "fetches nothing")  # fmt: skip
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    result = commands.run(S3PRL, "--base_model_name", "someone/base", "--checkpoint_path", str(case.checkpoint),
                          "--model_dump_path", str(output))  # fmt: skip
    assert_refused(result, output, "hub:someone/base/model.safetensors is not in the local Hugging Face cache; "
                   "HF_HUB_OFFLINE=1 fetches nothing")  # fmt: skip
    assert online.requests == []


def test_a_dead_endpoint_is_reported_once_and_quickly(
    monkeypatch: pytest.MonkeyPatch, online: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Without the probe, huggingface_hub would retry each file for about 23 s."""
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    output = tmp_path / "out"
    started = time.monotonic()
    result = commands.run(S3PRL, "--base_model_name", "someone/base", "--checkpoint_path", str(case.checkpoint),
                          "--model_dump_path", str(output))  # fmt: skip
    assert time.monotonic() - started < 10
    text = " ".join(result.stderr.split())
    assert text.count(f"{dead} cannot be reached (connection refused)") == 1, text
    assert "HF_HUB_OFFLINE=1 uses the caches without trying" in text
    assert_refused(result, output, "Give local files instead (--checkpoint_path FILE, a local model directory), or "
                   "set HF_HUB_OFFLINE=1 to use only what the caches hold")  # fmt: skip


def test_every_input_that_cannot_be_had_is_named_in_one_refusal(
    online: Any, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(FAMILIES[0], Head.SEQUENCE)
    url = online.add_file("dev-best.ckpt", case.checkpoint.read_bytes())
    online.faults["/files/dev-best.ckpt"] = 500
    result = commands.run(S3PRL, "--base_model_name", "nobody/base", "--checkpoint_path", url, "--verify",
                          "nobody/converted")  # fmt: skip
    assert_refused(
        result, tmp_path / "none", f"--checkpoint_path {url}: {url}: the server answered 500",
        "--base_model_name 'nobody/base': not a local directory, and hub model 'nobody/base' was not found",
        "--verify 'nobody/converted': not a local directory, and hub model 'nobody/converted' was not found",
    )  # fmt: skip


def test_the_fetcher_probes_a_host_once() -> None:
    fetcher = Fetcher(offline=False)
    assert fetcher.unreachable("http://127.0.0.1:9/a") is not None
    assert fetcher.unreachable("http://127.0.0.1:9/b") is not None
    assert len(fetcher.notes) == 1


SPEECH_COMMANDS = BY_NAME["ast-finetuned-speech-commands-v2"]


def test_speech_commands_sample_needs_the_datasets_library_and_says_so(
    ast_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # not installed
    checkpoint, output = str(ast_checkpoint(SPEECH_COMMANDS)), str(tmp_path / "out")
    result = commands.run(AST, "--model_name", SPEECH_COMMANDS.name, "--checkpoint_path", checkpoint,
                          "--pytorch_dump_folder_path", output)  # fmt: skip
    assert check_result(result.stdout, "test_logits_match_the_published_slice") == "skipped"
    assert ("the slice was published for speech_commands v0.02 validation[0]: install datasets (pip install "
            "datasets) to fetch it, or give --sample_audio") in " ".join(result.stdout.split())  # fmt: skip


def test_speech_commands_sample_is_fetched_through_datasets_where_installed(
    ast_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As the seed read it: ``load_dataset("speech_commands", "v0.02", split="validation")``, item 0 (streamed here);
    the synthetic checkpoint is then refused at the published slice."""
    import types

    from converters.audio import read_audio

    asked: list[tuple[Any, ...]] = []

    def load_dataset(*arguments: Any, **options: Any) -> Any:
        asked.append((*arguments, options.get("split")))
        return iter([{"audio": {"array": read_audio(SPEECH)[:16000], "sampling_rate": 16000}}])

    monkeypatch.setitem(__import__("sys").modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    output = tmp_path / "out"
    result = commands.run(AST, "--model_name", SPEECH_COMMANDS.name, "--checkpoint_path",
                          str(ast_checkpoint(SPEECH_COMMANDS)), "--pytorch_dump_folder_path", str(output))  # fmt: skip
    assert asked == [("speech_commands", "v0.02", "validation")]
    assert_refused(result, output, "check test_logits_match_the_published_slice failed: logits[0, :3] = ",
                   "on speech_commands v0.02 validation[0] (datasets)")  # fmt: skip


def test_push_to_hub_alone_pushes_to_a_repository_named_as_the_output(
    ast_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The seed's command line took ``--push_to_hub`` without a name."""
    from converters import cli

    pushed: list[tuple[Path, str]] = []
    monkeypatch.setattr(cli, "push", lambda directory, repo_id: pushed.append((directory, repo_id)))
    output = tmp_path / "ast-converted"
    result = commands.run(AST, "--model_name", TENTEN.name, "--checkpoint_path", str(ast_checkpoint(TENTEN)),
                          "--pytorch_dump_folder_path", str(output), "--push_to_hub")  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert pushed == [(output, "ast-converted")]
    assert final_message(result.stdout) == f"{AST}: pushed {output} to ast-converted"
