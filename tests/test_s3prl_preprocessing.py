"""What an S3PRL head's directory does to a recording is what s3prl's upstream did: derived from the upstream the
head was trained on (``Args.upstream``), checked from recordings against s3prl's own preprocessing code.

Every family and head through the command, on a base-size upstream (raw waveforms) and a large one (each
waveform layer-normalized): the written extractor, s3prl's upstream expert's own preprocessing as the reference,
the input stage and the outputs from each recording. Then what is refused (a base model of another family or
feature encoder than the upstream's), what is inferred (an upstream the table lacks), and the difference by design
(transformers' eps 1e-7 against layer_norm's 1e-5), measured against what the tolerance derives from it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from converters.recordings import BY_NAME
from converters.s3prl.example import ALL_CASES, UPSTREAM_NAMES, S3PRLCase, runner_checkpoint
from converters.s3prl.families import FAMILIES, FinalNorm, Head
from converters.s3prl.original import upstream_input
from converters.s3prl.preprocessing import normalization_gap, scale_difference
from converters.s3prl.upstreams import ALIASES
from converters.s3prl.upstreams import BY_NAME as UPSTREAMS
from converters.s3prl.upstreams import UPSTREAMS as TABLE
from fixtures import commands
from fixtures.commands import assert_refused, check_result
from fixtures.transformers_versions import command_gate

S3PRL = "convert-s3prl-checkpoint"
WAV2VEC2 = FAMILIES[0]
LAYER_NORMED = {"Data2VecAudio", "Wav2Vec2Conformer"}  # the only form the fixtures build: as s3prl's upstreams

# Each family and head on its base-size form (its feature encoder group-normed where the family has such a
# form) and on its large form (layer-normed: do_stable_layer_norm, as wav2vec2-large-lv60 and kin).
FORMS = [
    *(pytest.param(family, head, False, family.name in LAYER_NORMED, id=f"{family.model_class(head)}-base")
      for family, head in ALL_CASES),
    *(pytest.param(family, head, True, True, id=f"{family.model_class(head)}-large")
      for family, head in ALL_CASES if family.final_norm is FinalNorm.STABLE),
]  # fmt: skip


def convert(case: S3PRLCase, output: Path, *extra: str, checkpoint: Path | None = None,
            base: Path | None = None) -> commands.Result:  # fmt: skip
    return commands.run(S3PRL, "--base_model_name", str(base or case.base), "--checkpoint_path",
                        str(checkpoint or case.checkpoint), "--model_dump_path", str(output), *extra)  # fmt: skip


def noted(stdout: str, field: str) -> str:
    """A feature-extractor field's line under the table, its wrapped continuation joined."""
    text = " ".join(stdout.split())
    found = re.search(rf"{field} = (\S+) <- (.*?)(?= \w+ = | input waveform:)", text)
    assert found, f"no {field} line in the output"
    return f"{found.group(1)} <- {found.group(2)}"


def with_upstream(case: S3PRLCase, directory: Path, name: str | None) -> Path:
    """The case's checkpoint, its head trained on s3prl upstream ``name`` (None: no Args.upstream)."""
    checkpoint = runner_checkpoint(case.base, case.family, case.head, case.size, weighted=case.weighted)
    args = vars(checkpoint["Args"])
    if name is None:
        del args["upstream"]
    else:
        args["upstream"] = name
    path = directory / "changed.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(("family", "head", "stable", "normalizes"), FORMS)
def test_every_family_and_head_computes_s3prls_function_from_the_recording(
    family: Any, head: Head, stable: bool, normalizes: bool, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(family, head, stable=stable)
    output = tmp_path / "out"
    result = convert(case, output)
    command_gate(family.name, result.returncode, result.stderr)  # transformers 4.x's SEW and SEW-D
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    written = json.loads((output / "preprocessor_config.json").read_text())
    assert (written["do_normalize"], written["return_attention_mask"]) == (normalizes, True)
    name = UPSTREAM_NAMES.get((family.name, stable or family.name in LAYER_NORMED))
    decided = name is not None and UPSTREAMS[name].normalizes is not None  # else the table has no word on it
    source = noted(result.stdout, "do_normalize")
    assert source.startswith(f"{normalizes} <- " + (f"s3prl upstream {name!r}" if decided else "inferred: "))
    assert check_result(result.stdout, "test_outputs_match_the_original_implementation") == "passed"
    lines = result.stdout.splitlines()
    for recording in ("voice-loud-1.2s", "voice-quiet-0.7s", "noise-1s"):
        assert any(line.startswith(f"  {recording} (") for line in lines), recording
    if head is not Head.XVECTOR:
        assert any(line.startswith("  a padded batch of the 3: ") for line in lines)
        assert any(line.startswith("outputs, padded batch: largest difference ") for line in lines)


def test_a_base_model_without_a_feature_extractor_config_converts(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The extractor follows from the upstream the head was trained on, not from a file beside the base model."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=True)
    base = tmp_path / "base"
    shutil.copytree(case.base, base)
    (base / "preprocessor_config.json").unlink()
    result = convert(case, tmp_path / "out", base=base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["do_normalize"] is True


def test_the_base_models_own_extractor_config_is_not_copied(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """The fixtures' base models carry transformers' default extractor (do_normalize true, no attention mask), as
    facebook/wav2vec2-base does though fairseq trained it on raw waveforms."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE)
    assert json.loads((case.base / "preprocessor_config.json").read_text())["do_normalize"] is True
    result = convert(case, tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:]
    written = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert (written["do_normalize"], written["return_attention_mask"]) == (False, True)


@pytest.mark.parametrize(("upstream", "stable", "words"), [
    ("wavlm_large", True, "the head was trained on s3prl upstream 'wavlm_large' (a wavlm model), but base model "),
    ("hubert", False, "the head was trained on s3prl upstream 'hubert' (a hubert model), but base model "),
    ("wav2vec2_large_ll60k", False, "the head was trained on s3prl upstream 'wav2vec2_large_ll60k', which was trained "
     "on normalized waveforms with a layer-norm feature encoder, but base model "),
    ("wav2vec2", True, "which was trained on raw waveforms with a group-norm feature encoder"),
], ids=["another-family", "another-family-by-alias", "a-group-norm-base", "a-layer-norm-base"])  # fmt: skip
def test_a_base_model_that_is_not_the_upstream_the_head_was_trained_on_is_refused(
    upstream: str, stable: bool, words: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=stable)
    output = tmp_path / "out"
    result = convert(case, output, checkpoint=with_upstream(case, tmp_path, upstream))
    assert_refused(result, output, words, "give the base model the head was trained on")


@pytest.mark.parametrize(("name", "stable"), [("wav2vec2_my_own", True), ("wav2vec2_my_own", False), (None, True),
                                              ("wav2vec2_large_voxpopuli_100k", True)])  # fmt: skip
def test_an_upstream_the_table_cannot_decide_is_inferred_from_the_encoder_and_reported(
    name: str | None, stable: bool, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=stable)
    output = tmp_path / "out"
    result = convert(case, output, checkpoint=with_upstream(case, tmp_path, name))
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads((output / "preprocessor_config.json").read_text())["do_normalize"] is stable
    why = ("Args.upstream is absent" if name is None else f"s3prl upstream {name!r} is not in the table"
           if name not in UPSTREAMS else f"s3prl upstream {name!r} has no published training config")  # fmt: skip
    encoder = "a layer-norm" if stable else "a group-norm"
    assert noted(result.stdout, "do_normalize") == (
        f"{stable} <- inferred: {why}, and base model {case.base} has {encoder} feature encoder, which fairseq trains "
        f"on {'normalized' if stable else 'raw'} waveforms (--normalize_waveform yes|no decides otherwise)"
    )


@pytest.mark.parametrize("choice", ["yes", "no"])
def test_normalize_waveform_decides_and_the_report_says_so(
    choice: str, s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """Over the table too (a group-norm base given for a layer-norm upstream is then the user's word); the
    reference follows it: s3prl's experts normalize as the upstream checkpoint's config says."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=True)
    output = tmp_path / "out"
    result = convert(case, output, "--normalize_waveform", choice)
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads((output / "preprocessor_config.json").read_text())["do_normalize"] is (choice == "yes")
    assert noted(result.stdout, "do_normalize") == (
        f"{choice == 'yes'} <- --normalize_waveform {choice}; s3prl's 'wav2vec2_large_ll60k' normalizes each waveform"
    )


def test_the_eps_difference_is_what_the_tolerance_derives_and_no_more(
    s3prl_case: Callable[..., S3PRLCase], tmp_path: Path
) -> None:
    """On the quiet recording the two normalizations part by nearly the whole derived gap (a real difference, not a
    tolerance widened for nothing); on the loud one by almost nothing."""
    case = s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=True)
    result = convert(case, tmp_path / "out")
    assert result.returncode == 0, result.stdout[-3000:]
    quiet, loud = BY_NAME["voice-quiet-0.7s"].waveform(), BY_NAME["voice-loud-1.2s"].waveform()
    assert 0.04 < scale_difference(quiet) < 0.05 and scale_difference(loud) < 1e-4
    text = " ".join(result.stdout.split())
    line = text[text.index("input waveform:") :].split(" voice-quiet-0.7s (", 1)[1].split(" noise-1s (")[0]
    found = float(re.search(r"largest difference (\S+) \(tolerance (\S+);", line).group(1))  # type: ignore[union-attr]
    assert 0.9 * normalization_gap(quiet) < found <= normalization_gap(quiet) + 1e-4
    assert "the two scales 4.6 % apart" in line


def test_s3prls_preprocessing_is_what_its_own_code_does() -> None:
    """``upstream_input`` runs s3prl's WavLM expert's forward: each waveform layer-normalized (eps 1e-5) when the
    upstream normalizes, zero-padded, a padding mask True where padded."""
    a, b = np.linspace(-0.02, 0.03, 7, dtype=np.float32), np.array([0.1, -0.3, 0.2], dtype=np.float32)
    wav, mask = upstream_input([a, b], normalize=True)
    expected = torch.nn.functional.layer_norm(torch.from_numpy(a), (7,))
    assert torch.equal(wav[0], expected) and torch.equal(wav[1, 3:], torch.zeros(4))
    assert mask.tolist() == [[False] * 7, [False] * 3 + [True] * 4]
    raw, _ = upstream_input([a, b], normalize=False)
    assert torch.equal(raw[0], torch.from_numpy(a)) and torch.equal(raw[1, :3], torch.from_numpy(b))


def _preprocessing(expert: str) -> list[str]:
    """The statements of an s3prl expert's ``forward`` up to its model call, as source text, with the attribute
    that holds ``normalize`` spelled alike (``task_cfg.normalize``, ``cfg.normalize``, ``wav_normalize``)."""
    spec = importlib.util.find_spec(f"s3prl.upstream.{expert}.expert")
    assert spec is not None and spec.origin is not None
    module = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    expert_class = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "UpstreamExpert")
    forward = next(n for n in expert_class.body if isinstance(n, ast.FunctionDef) and n.name == "forward")
    found = []
    for statement in forward.body:
        text = ast.unparse(statement)
        if "extract_features" in text:
            break
        if "numpy_wav_normalize" in text:  # wav2vec2's alternative for s3prl's own comparisons, off by default
            text = re.sub(r"if self\.numpy_wav_normalize:.*?else:\s*", "", text, flags=re.S)
        found.append(re.sub(r"self\.(task_cfg|cfg|wav_normalize)(\.normalize)?", "NORMALIZE", text))
    return found


@pytest.mark.parametrize("expert", ["wav2vec2", "hubert", "unispeech_sat", "data2vec"])
def test_every_s3prl_expert_of_these_families_preprocesses_as_the_one_run(expert: str) -> None:
    statements = _preprocessing(expert)
    assert sorted(statements) == sorted(_preprocessing("wavlm")), "\n".join(statements)


def test_the_upstream_table_names_only_s3prls_hubconf_functions() -> None:
    """Every name (aliases too) is a function of s3prl's hubconf for its family's upstream folder."""
    folders = {"wav2vec2": ("wav2vec2",), "wav2vec2-conformer": ("wav2vec2",), "hubert": ("hubert",),
               "wavlm": ("wavlm",), "unispeech-sat": ("unispeech_sat",), "data2vec-audio": ("data2vec",)}  # fmt: skip
    functions: dict[str, set[str]] = {}
    for folder in {f for fs in folders.values() for f in fs}:
        spec = importlib.util.find_spec(f"s3prl.upstream.{folder}")
        assert spec is not None and spec.submodule_search_locations
        source = Path(next(iter(spec.submodule_search_locations))) / "hubconf.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        functions[folder] = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    for row in TABLE:
        assert any(row.name in functions[f] for f in folders[row.model_type]), row.name
    for alias, target in ALIASES.items():
        assert alias in set().union(*functions.values()) and target in UPSTREAMS, alias
