"""README's sample of what a run prints is what the command prints: the same conversion, run here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from converters.ast.features import torchaudio_fbank
from converters.ast.variants import BY_NAME
from fixtures import commands

README = Path(__file__).parents[1] / "README.md"
TENTEN = BY_NAME["ast-finetuned-audioset-10-10-0.4593"]
SHOWN_AS = "/tmp/try"  # where README's sample wrote


def readme_sample() -> str:
    text = README.read_text()
    start = text.index("```\n", text.index("A successful AST conversion of a synthetic checkpoint")) + 4
    return text[start : text.index("```\n", start)]


def test_the_readme_sample_is_what_the_command_prints(
    ast_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same synthetic checkpoint (the 10-10 example, seeded), offline, at 100 columns."""
    if torchaudio_fbank() is not None:
        pytest.skip("torchaudio loads here: transformers takes its fbank, and the sample shows the numpy one")
    monkeypatch.setenv("COLUMNS", "100")
    output = tmp_path / "out"
    result = commands.run("convert-ast-checkpoint", "--model_name", TENTEN.name, "--checkpoint_path",
                          str(ast_checkpoint(TENTEN)), "--pytorch_dump_folder_path", str(output))  # fmt: skip
    printed = (result.stdout + result.stderr).replace(str(tmp_path), SHOWN_AS)
    # word for word; where a line wraps depends on the output path's length
    assert printed.split() == readme_sample().split()
