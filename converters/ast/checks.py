"""The AST conversion's own checks, beside the generic ones (``converters/checks.py``) in one session.

Fixtures (``conversion``, ``prepared``, ``reloaded``, ``reference``, ``comparison``, ...) come from the session,
``conversion`` being a ``converters.ast.conversion.ASTConversion``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from converters.ast.conversion import LOGITS_ATOL, SAMPLE, ASTConversion, Reference, dtype_tolerance, outputs_of
from converters.ast.labels import hub_id2label, id2label
from converters.contract import Comparison, Target
from converters.fetch import FetchFailure


@pytest.mark.check(order=81)
@torch.no_grad()
def test_logits_in_the_checkpoint_dtype(
    reloaded: tuple[Any, dict[str, Any]], reference: Reference, comparison: Comparison, measure: Any
) -> None:
    """Run as written (float16 or bfloat16 stays so), the model is off by no more than its precision costs."""
    model, _ = reloaded
    if model.dtype == torch.float32:
        pytest.skip("float32 checkpoint: the check above runs it as written")
    worst = (0.0, LOGITS_ATOL)
    for name, features in reference.inputs.items():
        original = reference.logits[name]
        difference = (outputs_of(model, features.to(model.dtype)).float() - original).abs().max().item()
        tolerance = dtype_tolerance(model.dtype, original.abs().max().item())
        worst = max(worst, (difference, tolerance), key=lambda item: item[0] / item[1])
    measure(*worst)
    assert worst[0] <= worst[1], f"{model.dtype} logits differ by {worst[0]:.3g} (tolerance {worst[1]:.3g})"


@pytest.mark.check(order=90)
def test_logits_match_the_published_slice(conversion: ASTConversion, comparison: Comparison, measure: Any) -> None:
    published = conversion.variant
    if published is None:
        pytest.skip("not a published model: no published logits to hold it to")
    if conversion.sample.waveform is None:
        pytest.skip(conversion.sample.what)
    logits = comparison.outputs[SAMPLE][0, :3]
    expected = torch.tensor(published.expected_slice)
    difference = (logits - expected).abs().max().item()
    measure(difference, LOGITS_ATOL)
    assert difference <= LOGITS_ATOL, (
        f"logits[0, :3] = {np.round(logits.numpy(), 4).tolist()} on {conversion.sample.what}, "
        f"published {list(published.expected_slice)} (difference {difference:.3g})"
    )


@pytest.mark.check(order=91)
def test_labels_agree_with_the_hub_label_file(conversion: ASTConversion, target: Target) -> None:
    recipe = conversion.derived.recipe
    if recipe is None or recipe.hub_label_file is None or target.payload.pretraining:
        pytest.skip("no hub label file for these labels (huggingface/label-files has AudioSet's and Speech Commands')")
    if tuple(target.config.id2label.values()) != tuple(id2label(recipe).values()):
        pytest.skip(f"the labels are not the {recipe.name} recipe's")
    try:
        hub = hub_id2label(recipe, conversion.fetcher)
    except FetchFailure as failure:
        pytest.skip(str(failure))
    assert hub == target.config.id2label, "the package's labels and the cached hub label file disagree"
