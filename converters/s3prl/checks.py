"""The S3PRL conversion's own checks, beside the generic ones (``converters/checks.py``) in one session.

Fixtures come from the session; ``source.payload`` is the runner checkpoint, ``target.payload`` the classifier
(``converters.s3prl.conversion.Plan``).
"""

from __future__ import annotations

import pytest
import torch

from converters.contract import Conversion, Source, Target
from converters.errors import ConversionError
from converters.s3prl.convert import check_representable
from converters.s3prl.release import check_release
from converters.safe_load import weights_dtype


@pytest.mark.check(order=15)
def test_the_classifier_config_fits_the_checkpoint(conversion: Conversion, target: Target, notes: list[str]) -> None:
    """Derived from the checkpoint and the base model, or given and agreeing with them in every field."""
    head = target.payload.head
    assert [head.family.model_class(head.head)] == (head.config.architectures or [])[:1]
    config = conversion.options.get("config_path")
    given = f"the given {config}, checked against " if config is not None else ""
    notes.append(f"classifier config: {given}what the checkpoint and base model imply:")
    notes.extend(f"  {field.name} = {field.value!r}  <- {field.source}" for field in head.fields)
    notes.append("feature extractor (preprocessor_config.json): what s3prl's upstream did to each recording:")
    notes.extend(f"  {field.name} = {field.value!r}  <- {field.source}" for field in head.extractor)


@pytest.mark.check(order=16)
def test_the_installed_transformers_can_represent_the_head(target: Target) -> None:
    check_release(target.payload.head)


@pytest.mark.check(order=17)
def test_the_training_setup_is_representable(source: Source, target: Target) -> None:
    check_representable(source.payload, target.payload.head)


@pytest.mark.check(order=25)
def test_the_head_joins_the_base_model_exactly(conversion: Conversion, source: Source, target: Target) -> None:
    """The head joins a float32 base model: float16 and bfloat16 widen exactly, float64 would be rounded."""
    weights = target.payload.head.mapping.converted_sources(source.tensors)
    dtype = weights_dtype(weights, conversion.where)
    if torch.finfo(dtype).bits > 32:
        raise ConversionError(f"{conversion.where}: the head's weights are {dtype}, which float32 cannot hold exactly")
