"""The checks of one S3PRL conversion, run as a pytest session by ``convert-s3prl-checkpoint``.

The ``conversion`` fixture (``converters.s3prl.cli.S3PRLConversion``) comes from the session's plugin.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import torch

from converters.audio import probe_signal
from converters.hub_layout import Digest, digests, serialized_state
from converters.s3prl.checkpoint import S3PRLCheckpoint, read
from converters.s3prl.convert import (
    Target,
    build_model,
    check_keys,
    check_representable,
    convert_head,
    feature_extractor,
    resolve_base,
    target_for,
)
from converters.s3prl.equivalence import compare_with_s3prl
from converters.s3prl.reference import installed
from converters.s3prl.release import check_release
from converters.safe_load import check_weights

# The utterances both heads hear: two lengths, so that a padded batch has padding; any such pair reaches
# every weight of the head.
PROBES = ((1.2, 1), (0.7, 2))  # (seconds, noise seed)


@pytest.fixture(scope="session")
def checkpoint(conversion: Any) -> S3PRLCheckpoint:
    return read(conversion.checkpoint)


@pytest.fixture(scope="session")
def target(conversion: Any, checkpoint: S3PRLCheckpoint, base: Path) -> Target:
    return target_for(checkpoint, base, conversion.config, conversion.labels)


@pytest.fixture(scope="session")
def head(checkpoint: S3PRLCheckpoint, target: Target) -> dict[str, torch.Tensor]:
    return convert_head(checkpoint, target)


@pytest.fixture(scope="session")
def base(conversion: Any) -> Path:
    return resolve_base(conversion.base_model)


@pytest.fixture(scope="session")
def staged(conversion: Any, base: Path, target: Target, head: dict[str, torch.Tensor]) -> dict[str, Digest]:
    """Build the model, write it, and keep only the digests of what it held: it is freed before the
    written files are loaded back, so that the conversion never holds two copies of the base model."""
    built = build_model(base, target, head)
    built.save_pretrained(conversion.staging)
    feature_extractor(base).save_pretrained(conversion.staging)
    written = digests(serialized_state(built))
    del built
    gc.collect()  # the model holds reference cycles: free its weights now, before the reload allocates more
    return written


@pytest.fixture(scope="session")
def reloaded(conversion: Any, staged: dict[str, Digest], target: Target) -> tuple[Any, dict[str, Any]]:
    # dtype="auto": as written, in 4.x as in 5.x (4.x would otherwise widen to float32)
    loaded: Any = target.model_class.from_pretrained(conversion.staging, dtype="auto", output_loading_info=True)
    model, info = loaded
    return model.eval(), info


def test_source_loads_safely(checkpoint: S3PRLCheckpoint) -> None:
    """Loaded with weights_only=True, argparse.Namespace mapped to an inert stand-in, nothing else allowed."""
    assert checkpoint.downstream, f"{checkpoint.path}: the Downstream entry holds no tensors"


def test_the_classifier_config_fits_the_checkpoint(conversion: Any, target: Target, notes: list[str]) -> None:
    """Derived from the checkpoint and the base model, or given and agreeing with them in every field."""
    assert [target.family.model_class(target.head)] == (target.config.architectures or [])[:1]
    given = f"the given {conversion.config}, checked against " if conversion.config is not None else ""
    notes.append(f"classifier config: {given}what the checkpoint and base model imply:")
    notes.extend(f"  {field.name} = {field.value!r}  <- {field.source}" for field in target.fields)


def test_the_installed_transformers_can_represent_the_head(target: Target) -> None:
    check_release(target)


def test_the_training_setup_is_representable(checkpoint: S3PRLCheckpoint, target: Target) -> None:
    check_representable(checkpoint, target)


def test_every_downstream_key_is_consumed(checkpoint: S3PRLCheckpoint, target: Target) -> None:
    """Each key is used by exactly one rule, and each key the head (and s3prl's, best_score aside) needs is there."""
    check_keys(checkpoint, target)


def test_head_weights_are_finite_floats(checkpoint: S3PRLCheckpoint, target: Target) -> None:
    check_weights(target.mapping.converted_sources(checkpoint.flattened()), str(checkpoint.path))


def test_head_shapes_fit_the_config(head: dict[str, torch.Tensor]) -> None:
    assert head  # convert_head refuses a shape that does not fit; this check gives that refusal its row


def test_the_base_model_fits_the_config(staged: dict[str, Digest]) -> None:
    assert staged  # build_model refuses a base that does not fit; this check gives that refusal its row


def test_written_files_reload_exactly(
    staged: dict[str, Digest], head: dict[str, torch.Tensor], reloaded: tuple[Any, Any]
) -> None:
    model, info = reloaded
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    assert not any(problems.values()), f"from_pretrained reported {problems}"
    written = serialized_state(model)
    assert written.keys() == staged.keys()
    for key, digest in digests(written).items():
        assert digest == staged[key], f"{key} changed on reload"
    for key, tensor in head.items():
        assert torch.equal(written[key], tensor), f"{key} is not the checkpoint's tensor"


def test_head_matches_s3prl(
    conversion: Any, checkpoint: S3PRLCheckpoint, target: Target, reloaded: tuple[Any, Any], measure: Any,
    notes: list[str],
) -> None:  # fmt: skip
    """Fed the same hidden states, s3prl's own head and the converted one agree at every stage."""
    notes.append(f"reference: {installed()}")
    model, _ = reloaded
    waveforms = [probe_signal(seconds, seed=seed) for seconds, seed in PROBES]
    divergence = compare_with_s3prl(model, checkpoint, target, waveforms, feature_extractor(conversion.staging))
    worst = divergence.worst()
    measure(worst.difference, worst.tolerance)
    assert divergence.first is None, f"{divergence.summary()}\n{divergence.table()}"
