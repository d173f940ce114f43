"""Golden logits of every variant's converted synthetic checkpoint on a fixed speech clip.

A golden pins what transformers computes for a converted checkpoint, so that a release that changes
AST's forward or its feature extractor turns CI red. Each run also checks the converted model against
the original implementation first, so a golden is never written from an unverified model.
Update after review with `tox -e regen` (fixtures/goldens/*.txt show the change in a diff).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ASTForAudioClassification

from converters.ast.convert import convert, write
from converters.ast.original import load_original
from converters.ast.variants import VARIANTS, Variant
from converters.safe_load import as_state_dict, load_checkpoint
from fixtures.golden_files import ast_logits_name
from fixtures.inputs import speech_features

ATOL = 1e-4


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@pytest.mark.golden
@torch.no_grad()
def test_golden_logits(
    variant: Variant, ast_checkpoint: Callable[..., Path], golden: Callable[..., None], tmp_path: Path
) -> None:
    state = as_state_dict(load_checkpoint(ast_checkpoint(variant)), "synthetic checkpoint")
    write(convert(state, variant), tmp_path)
    features = speech_features(variant)
    logits = ASTForAudioClassification.from_pretrained(tmp_path).eval()(input_values=features).logits.numpy()
    reference = load_original(state, variant)(features).numpy()
    assert logits.shape == (1, variant.dataset.num_labels) and logits.dtype == np.float32
    assert np.abs(logits - reference).max() <= ATOL, "converted model disagrees with the original"
    golden(ast_logits_name(variant.name), {"logits": logits}, atol=ATOL)
