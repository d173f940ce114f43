"""Publishing output: whole or not at all, and what a killed run leaves behind is cleaned up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converters.errors import ConversionError
from converters.output import check_target, clean_stale, make_staging, publish


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


def test_overwrite_swaps_the_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.bin").write_text("old")
    publish(staged(target, {"a.json": "new"}), target, overwrite=True)
    assert [p.name for p in target.iterdir()] == ["a.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


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
    assert sorted(clean_stale(target)) == sorted(stale)
    assert live.exists() and other.exists()
    assert not target.exists()
