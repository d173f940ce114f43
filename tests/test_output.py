"""Publishing output: whole or not at all, and what a killed run leaves behind is cleaned up."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from converters import output
from converters.errors import ConversionError
from converters.output import (
    _alive,
    _exchange,
    check_target,
    clean_stale,
    discard,
    make_staging,
    publish,
    write_safetensors,
)


def staged(target: Path, files: dict[str, str]) -> Path:
    staging = make_staging(target)
    for name, text in files.items():
        (staging / name).write_text(text)
    return staging


def test_publish_creates_the_target_from_the_staging_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    publish(staged(target, {"a.json": "new"}), target, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "a.json").read_text() == "new"


@pytest.mark.parametrize("system", ["atomic exchange", "no exchange"])
def test_overwrite_replaces_the_whole_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str) -> None:
    """Linux swaps the old target out in one step, never a two-step replace; on file systems without
    RENAME_EXCHANGE the old target is moved aside, replaced, then removed."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.bin").write_text("old")
    if system == "atomic exchange":

        def no_two_step_replace(*args: object) -> None:
            raise AssertionError("the target was replaced in two steps")

        monkeypatch.setattr(output.os, "replace", no_two_step_replace)
    else:
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    publish(staged(target, {"a.json": "new"}), target, overwrite=True)
    assert [p.name for p in target.iterdir()] == ["a.json"]
    assert (target / "a.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    ("umask", "file_mode", "directory_mode"), [(0o027, 0o640, 0o750), (0o022, 0o644, 0o755), (0, 0o666, 0o777)]
)
def test_published_files_get_the_permissions_a_plain_write_would(
    tmp_path: Path, umask: int, file_mode: int, directory_mode: int
) -> None:
    target = tmp_path / "out"
    previous = os.umask(umask)
    try:
        publish(staged(target, {"a.json": "new"}), target, overwrite=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((target / "a.json").stat().st_mode) == file_mode
    assert stat.S_IMODE(target.stat().st_mode) == directory_mode


def test_without_exchange_the_old_target_is_retired_beside_it_under_a_recognisable_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same file system (so the moves are renames), and a name the next run's clean-up knows."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.bin").write_text("old")
    monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    removed: list[Path] = []
    real_rmtree = shutil.rmtree

    def recorded_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        removed.append(Path(path))
        real_rmtree(path)

    monkeypatch.setattr(output.shutil, "rmtree", recorded_rmtree)
    publish(staged(target, {"a.json": "new"}), target, overwrite=True)
    (retired,) = removed
    assert retired.parent == tmp_path and retired.name.startswith(f".retired-out-{os.getpid()}-")
    assert (target / "a.json").read_text() == "new"


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_exchange_swaps_two_paths_and_names_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the working directory (AT_FDCWD)
    base = tmp_path if where == "absolute" else Path()
    (base / "a").write_text("a")
    (base / "b").write_text("b")
    assert _exchange(base / "a", base / "b") is True
    assert (tmp_path / "a").read_text() == "b" and (tmp_path / "b").read_text() == "a"
    with pytest.raises(FileNotFoundError) as refused:
        _exchange(base / "a", base / "missing")
    assert (refused.value.strerror, refused.value.filename) == ("No such file or directory", str(base / "missing"))


class FakeLibc:
    """A C library whose renameat2 fails with ``error``, as on a file system without RENAME_EXCHANGE."""

    def __init__(self, error: int) -> None:
        self.error = error

    def renameat2(self, *args: object) -> int:
        ctypes.set_errno(self.error)
        return -1


@pytest.mark.parametrize("error", [errno.EINVAL, errno.ENOSYS, errno.ENOTSUP])
def test_exchange_reports_a_system_without_it(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    monkeypatch.setattr(output.ctypes, "CDLL", lambda *args, **kwargs: FakeLibc(error))
    assert _exchange(Path("a"), Path("b")) is False


def test_exchange_reports_a_c_library_without_renameat2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.ctypes, "CDLL", lambda *args, **kwargs: object())
    assert _exchange(Path("a"), Path("b")) is False

    def no_library(*args: object, **kwargs: object) -> None:
        raise OSError("no C library")

    monkeypatch.setattr(output.ctypes, "CDLL", no_library)
    assert _exchange(Path("a"), Path("b")) is False


def test_liveness_is_probed_without_disturbing_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGHUP at its default (a run started under nohup would pass on ignoring it): any signal but 0 ends it
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"
    )
    sleeper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert sleeper.stdout is not None and sleeper.stdout.readline() == "ready\n"  # its handlers are set
    try:
        assert _alive(sleeper.pid)
        with pytest.raises(subprocess.TimeoutExpired):  # still running: probing sent it no signal that ends it
            sleeper.wait(timeout=0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not _alive(sleeper.pid)

    def not_ours(pid: int, signal: int) -> None:
        raise PermissionError(pid)

    monkeypatch.setattr(output.os, "kill", not_ours)
    assert _alive(sleeper.pid), "another user's live process must count as alive"


def test_a_non_empty_target_is_refused_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(ConversionError, match="--overwrite"):
        check_target(target, overwrite=False)


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".staging-out-{dead_pid}-abc", tmp_path / f".retired-out-{dead_pid}-def"]
    for path in stale:
        path.mkdir()
        (path / "model.safetensors").write_text("half")
    live = make_staging(target)  # this process's own
    other = tmp_path / f".staging-other-{dead_pid}-xyz"  # another target's: not ours to touch
    other.mkdir()
    sibling = make_staging(tmp_path / f"out-{dead_pid}")  # a live run's, for target "out-<pid>"
    assert sorted(clean_stale(target)) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert live.exists() and other.exists() and sibling.exists()
    assert not target.exists()


def test_a_leftover_another_run_removed_meanwhile_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs may clean the same directory at once; discarding what is already gone is no error either."""
    stale = tmp_path / ".staging-out-99999999-abc"
    stale.mkdir()

    def removed_by_the_other_run(pid: int) -> bool:
        shutil.rmtree(stale)  # the other run was faster
        return False

    monkeypatch.setattr(output, "_alive", removed_by_the_other_run)
    assert clean_stale(tmp_path / "out") == [stale]
    discard(tmp_path / "never-made")


def test_the_staging_directory_is_hidden_beside_the_target_and_names_this_run(tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "out")
    assert staging.parent == tmp_path and staging.name.startswith(f".staging-out-{os.getpid()}-")


def test_a_target_that_is_a_file_or_has_no_parent_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ConversionError) as refused:
        check_target(tmp_path / "file", overwrite=True)
    assert str(refused.value) == f"output path {tmp_path / 'file'} exists and is not a directory"
    with pytest.raises(ConversionError) as refused:
        check_target(tmp_path / "missing" / "out", overwrite=False)
    assert str(refused.value) == f"the parent of output directory {tmp_path / 'missing' / 'out'} does not exist"


def test_views_are_written_as_they_are_without_duplication(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open

    fused = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    rows, columns = fused.chunk(3, dim=0), fused.chunk(2, dim=1)  # disjoint views; the columns are not contiguous
    tensors = {**{f"row{i}": t for i, t in enumerate(rows)}, **{f"column{i}": t for i, t in enumerate(columns)}}
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", "pt") as written:
        assert written.metadata() == {"format": "pt"}
        assert set(written.keys()) == set(tensors)
        for key, tensor in tensors.items():
            assert torch.equal(written.get_tensor(key), tensor), key
    header = int.from_bytes((tmp_path / "model.safetensors").read_bytes()[:8], "little")
    assert (tmp_path / "model.safetensors").stat().st_size == 8 + header + 2 * fused.numel() * 4


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test: a real full disk, where the machine lets a test mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}); the injected faults "
                    "of tests/test_converters.py stand in")  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_is_named_and_leaves_nothing_behind(
    small_filesystem: Path, ast_checkpoint: Callable[..., Path]
) -> None:
    """The tiny AST checkpoint's model.safetensors (3.6 MB) does not fit in 1 MiB: its write fails for real."""
    from converters.ast.variants import VARIANTS
    from fixtures.commands import assert_refused, run

    output = small_filesystem / "out"
    result = run("convert-ast-checkpoint", "--model_name", VARIANTS[0].name, "--checkpoint_path",
                 str(ast_checkpoint(VARIANTS[0])), "--pytorch_dump_folder_path", str(output))  # fmt: skip
    last = assert_refused(result, output, "no space left on device while writing model.safetensors into")
    assert str(small_filesystem) in last
    assert list(small_filesystem.iterdir()) == []
