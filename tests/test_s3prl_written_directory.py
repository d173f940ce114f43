"""One written directory, both transformers majors: what the command wrote under transformers 5 computes
s3prl's function under 4.57 as under 5.x (tox runs this module in both).

``fixtures/written/`` holds the command's output for a stable-layer-norm Wav2Vec2 sequence head with a
weighted layer sum, the case transformers 5 changed; ``tox -e regen`` (``--regen-all``) rewrites it, under
transformers 5 only. Its inputs are the suite's seeded synthetic checkpoint and base model; a second test
holds the committed files to what the command writes from them today.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from converters.audio import directory_extractor
from converters.s3prl.checkpoint import read
from converters.s3prl.convert import target_for
from converters.s3prl.example import S3PRLCase
from converters.s3prl.families import FAMILIES, Head
from converters.s3prl.stages import compare_with_s3prl
from fixtures import commands
from fixtures.transformers_versions import MAJOR

WRITTEN = Path(__file__).parents[1] / "fixtures" / "written" / "wav2vec2-stable-weighted-sequence"
WAV2VEC2 = FAMILIES[0]


@pytest.fixture
def case(s3prl_case: Callable[..., S3PRLCase]) -> S3PRLCase:
    return s3prl_case(WAV2VEC2, Head.SEQUENCE, stable=True)


def convert(case: S3PRLCase, output: Path) -> None:
    result = commands.run("convert-s3prl-checkpoint", "--base_model_name", str(case.base), "--checkpoint_path",
                          str(case.checkpoint), "--model_dump_path", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.golden
def test_the_directory_written_under_transformers5_computes_s3prls_function_here(
    case: S3PRLCase, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if request.config.getoption("force_regen") or request.config.getoption("regen_all"):
        assert MAJOR >= 5, "the committed directory is written under transformers 5: regenerate with `tox -e regen`"
        convert(case, tmp_path / "out")
        shutil.rmtree(WRITTEN, ignore_errors=True)
        shutil.copytree(tmp_path / "out", WRITTEN)
    written = json.loads((WRITTEN / "config.json").read_text())
    assert written["transformers_version"].startswith("5.")
    assert (written["tie_last_hidden_states"], written["use_weighted_layer_sum"]) == (True, True)
    model = target_for(read(case.checkpoint), case.base).model_class.from_pretrained(WRITTEN).eval()
    checkpoint = read(case.checkpoint)
    found = compare_with_s3prl(model, checkpoint, target_for(checkpoint, case.base), directory_extractor(WRITTEN))
    assert found.divergence.first is None, found.divergence.table()


@pytest.mark.golden
def test_the_committed_directory_is_what_the_command_writes_today(case: S3PRLCase, tmp_path: Path) -> None:
    convert(case, tmp_path / "out")
    today, committed = load_file(tmp_path / "out" / "model.safetensors"), load_file(WRITTEN / "model.safetensors")
    assert today.keys() == committed.keys()
    changed = [key for key in today if not torch.equal(today[key], committed[key])]
    assert not changed, f"fixtures/written differs from today's conversion in {changed[:3]}: run `tox -e regen`"
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "out", WRITTEN))
    release_fields = {"transformers_version", "dtype", "torch_dtype"}  # how each major spells what it wrote
    assert {k: v for k, v in ours.items() if k not in release_fields} == {
        k: v for k, v in theirs.items() if k not in release_fields
    }
    extractors = [json.loads((d / "preprocessor_config.json").read_text()) for d in (tmp_path / "out", WRITTEN)]
    assert extractors[0] == extractors[1]
