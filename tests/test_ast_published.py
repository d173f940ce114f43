"""The published logit slices, on the real original checkpoints, when a user provides them.

Point ``--published-dir`` (or AST_PUBLISHED_DIR) at a directory holding each variant's original file
under its download name (``audioset_10_10_0.4593.pth``, ...; see the README table) and the sample audio
(``sample_audio.flac``, ``speech_commands_v2_validation_0.wav``). Without it these tests are skipped and
say so: the checkpoints are not redistributable test data and tests never download.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converters.ast.variants import VARIANTS, Variant
from fixtures.commands import check_result


@pytest.mark.process
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_published_slice(variant: Variant, published_dir: Path | None, tmp_path: Path) -> None:
    if published_dir is None:
        pytest.skip("no --published-dir / AST_PUBLISHED_DIR given: real checkpoints are not available here")
    checkpoint, sample = published_dir / variant.checkpoint_filename, published_dir / variant.sample_audio
    for needed in (checkpoint, sample):
        if not needed.is_file():
            pytest.skip(f"{needed} not found (download: {variant.url})")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "converters.cli",
            "ast",
            "--model_name",
            variant.name,
            "--checkpoint_path",
            str(checkpoint),
            "--sample_audio",
            str(sample),
            "--pytorch_dump_folder_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert check_result(result.stdout, "test_logits_match_the_published_slice") == "passed"
