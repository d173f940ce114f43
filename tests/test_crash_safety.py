"""A conversion killed (SIGKILL) at any moment leaves either no output directory or a complete one,
and the next run cleans up after it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors import safe_open

from converters.ast.variants import BY_NAME
from fixtures import commands
from fixtures.commands import OUTPUT_FILES

TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]


def staging(parent: Path) -> Path | None:
    return next((p for p in parent.iterdir() if p.name.startswith(".staging-")), None)


def staged(parent: Path, name: str) -> bool:
    found = staging(parent)
    return found is not None and (found / name).exists()


# When to kill, as seen from outside: each a moment of the run's own progress.
POINTS: dict[str, Callable[[Path, Path], bool]] = {
    "while starting": lambda parent, target: True,
    "staging directory created": lambda parent, target: staging(parent) is not None,
    "config written": lambda parent, target: staged(parent, "config.json"),
    "weights being written": lambda parent, target: staged(parent, "model.safetensors"),
    "all files staged": lambda parent, target: staged(parent, "preprocessor_config.json"),
    "output published": lambda parent, target: target.exists(),
}


def kill_when(arguments: list[str], condition: Callable[[], bool], delay: float = 0.0) -> str:
    """Start the command, SIGKILL it as soon as ``condition`` holds; 'killed' or 'finished first'."""
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return "killed"
        time.sleep(0.002)
    process.wait()
    return "finished first"


def assert_absent_or_complete(target: Path) -> None:
    if not target.exists():
        return
    assert {p.name for p in target.iterdir()} == OUTPUT_FILES["ast"]
    config = json.loads((target / "config.json").read_text())
    json.loads((target / "preprocessor_config.json").read_text())
    with safe_open(target / "model.safetensors", "pt") as weights:
        layers = {k.split(".")[3] for k in weights.keys() if ".encoder.layer." in k}  # noqa: SIM118
        assert len(layers) == config["num_hidden_layers"]
        for key in weights.keys():  # noqa: SIM118
            weights.get_tensor(key)  # every tensor readable to its end


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("point", POINTS)
def test_a_killed_conversion_leaves_nothing_or_everything(
    point: str, ast_checkpoint: Callable[..., Path], tmp_path: Path
) -> None:
    checkpoint = ast_checkpoint(TENTEN, "full")
    target = tmp_path / "out"
    arguments = [commands.command("convert-ast-checkpoint"), "--model_name", TENTEN.name, "--checkpoint_path",
                 str(checkpoint), "--pytorch_dump_folder_path", str(target)]  # fmt: skip
    delay = 0.3 if point == "while starting" else 0.0
    outcome = kill_when(arguments, lambda: POINTS[point](tmp_path, target), delay)
    assert outcome == "killed", f"the run finished before reaching '{point}'"
    assert_absent_or_complete(target)
    assert target.exists() == (point == "output published")
    # The next run is not confused by what the killed one left, and removes it.
    again = subprocess.run([*arguments, "--overwrite"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_absent_or_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
