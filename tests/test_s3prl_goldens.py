"""Golden outputs of every family x head conversion on fixed audio, checked against s3prl first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.s3prl.example import STABLE_CASES, S3PRLCase
from converters.s3prl.families import Head
from converters.s3prl.preprocessing import feature_extractor
from converters.s3prl.stages import ATOL, compare_with_s3prl
from fixtures.golden_files import s3prl_name
from tests.test_s3prl_equivalence import CASES, converted, waveforms

# The goldens are shared by the transformers 4.57 and 5.x environments: a written model of either major
# computes the same logits, each checked against s3prl first.
GOLDEN_CASES = [
    *(pytest.param(*case.values, False, id=case.id, marks=case.marks) for case in CASES),
    *(pytest.param(family, head, True, id=f"{family.model_class(head)}-stable") for family, head in STABLE_CASES),
]


@pytest.mark.parametrize(("family", "head", "stable"), GOLDEN_CASES)
@pytest.mark.golden
@torch.no_grad()
def test_golden_outputs(family: Any, head: Head, stable: bool, s3prl_case: Callable[..., S3PRLCase],
                        golden: Callable[..., None], tmp_path: Path) -> None:  # fmt: skip
    case = s3prl_case(family, head, stable=stable)
    model, target, checkpoint = converted(case, tmp_path)
    extractor = feature_extractor(target.extractor)
    divergence = compare_with_s3prl(model, checkpoint, target, extractor).divergence
    assert divergence.first is None, f"converted model disagrees with s3prl:\n{divergence.table()}"
    # One utterance: padded x-vector batches pool differently by design (see test_s3prl_equivalence.py).
    out = model(**extractor(waveforms()[:1], sampling_rate=16000, return_tensors="pt"))
    arrays = {"logits": out.logits.numpy()}
    if head is Head.XVECTOR:
        arrays["embeddings"] = out.embeddings.numpy()
    golden(s3prl_name(family.name, head, stable), arrays, atol=ATOL)
