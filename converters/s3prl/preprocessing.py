"""The feature extractor a converted S3PRL head needs: what s3prl's upstream expert does to a waveform before
its model, derived from the upstream the head was trained on, never copied from the base model's directory.

s3prl's upstream experts (``upstream/{wav2vec2,hubert,wavlm,unispeech_sat,data2vec}/expert.py``) take 16 kHz mono
waveforms, layer-normalize each one where the upstream was trained so (``converters.s3prl.upstreams``), pad the
batch with zeros (``pad_sequence``) and pass the model a padding mask. transformers' ``Wav2Vec2FeatureExtractor``
does the same with ``do_normalize`` and ``return_attention_mask=True`` (normalizing each utterance over its own
samples only when it returns the mask), with one difference by design: it normalizes with eps 1e-7 inside
the square root, ``F.layer_norm`` with 1e-5 (``normalization_gap``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.recordings import recordings
from converters.s3prl.derive import Field
from converters.s3prl.families import Family
from converters.s3prl.upstreams import upstream

# The recordings an S3PRL head is compared on: loud, quiet and in between; of three lengths, so that a padded batch
# of them pads two.
S3PRL_RECORDINGS = recordings("voice-loud-1.2s", "voice-quiet-0.7s", "noise-1s")
PADDED = "padded batch"  # the three as one batch

TRANSFORMERS_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
S3PRL_EPS = 1e-5  # torch.nn.functional.layer_norm's default, as s3prl's experts call it
CHOICES = ("yes", "no")  # --normalize_waveform


def layer_norm_encoder(config: Any) -> bool:
    """Whether the base model's feature encoder is layer-normed (Data2VecAudio's always is): the kind fairseq trains
    on normalized waveforms."""
    return getattr(config, "feat_extract_norm", "layer") == "layer"


def normalization(checkpoint_args: dict[str, Any], family: Family, config: Any, where: str,
                  override: str | None = None) -> Field:  # fmt: skip
    """Whether s3prl layer-normalized each waveform for ``Args.upstream``: from the table of s3prl's upstreams, else
    inferred from the base model's encoder; ``override`` (``--normalize_waveform``) decides over both. A base model of
    another family than the upstream's, or (the table deciding) another feature encoder, is refused: the head was
    trained on another upstream, which the comparison with s3prl cannot see (it feeds s3prl the base model given)."""
    name = checkpoint_args.get("upstream")
    row = upstream(name) if name is not None else None
    encoder = "a layer-norm" if layer_norm_encoder(config) else "a group-norm"
    if row is not None and row.model_type != family.model_type:
        raise ConversionError(
            f"the head was trained on s3prl upstream {name!r} (a {row.model_type} model), but base model {where} is "
            f"a {family.model_type} model: give the base model the head was trained on"
        )
    if override is not None:
        if override not in CHOICES:
            raise ConversionError(f"--normalize_waveform {override!r}: choose yes or no")
        known = "" if row is None or row.normalizes is None else f"; s3prl's {name!r} {_says(row.normalizes)}"
        return Field("do_normalize", override == "yes", f"--normalize_waveform {override}{known}")
    if row is not None and row.normalizes is not None:
        if row.normalizes != layer_norm_encoder(config):
            raise ConversionError(
                f"the head was trained on s3prl upstream {name!r}, which was trained on "
                f"{'normalized' if row.normalizes else 'raw'} waveforms with a "
                f"{'layer' if row.normalizes else 'group'}-norm feature encoder, but base model {where} has "
                f"{encoder} feature encoder: give the base model the head was trained on (or --normalize_waveform)"
            )
        says = f"s3prl upstream {name!r} {_says(row.normalizes)} ({row.evidence})"
        return Field("do_normalize", row.normalizes, says)
    why = ("Args.upstream is absent" if name is None else
           f"s3prl upstream {name!r} is not in the table" if row is None else
           f"s3prl upstream {name!r} has no published training config")  # fmt: skip
    inferred = layer_norm_encoder(config)
    return Field(
        "do_normalize", inferred,
        f"inferred: {why}, and base model {where} has {encoder} feature encoder, which fairseq trains on "
        f"{'normalized' if inferred else 'raw'} waveforms (--normalize_waveform yes|no decides otherwise)",
    )  # fmt: skip


def _says(normalizes: bool) -> str:
    return "normalizes each waveform" if normalizes else "does not normalize waveforms"


def extractor_fields(normalize: Field) -> tuple[Field, ...]:
    """Every field of the written ``preprocessor_config.json`` that changes what the model is fed."""
    return (
        Field("feature_size", 1, "s3prl's upstreams take mono waveforms"),
        Field("sampling_rate", 16000, "s3prl's upstreams take 16 kHz (their SAMPLE_RATE)"),
        Field("padding_value", 0.0, "s3prl pads a batch with zeros (pad_sequence)"),
        normalize,
        Field("return_attention_mask", True, "s3prl's upstream experts pass their model a padding mask "
              "(wav_padding_mask); transformers normalizes each utterance over its own samples only with it"),
    )  # fmt: skip


def feature_extractor(fields: tuple[Field, ...]) -> Any:
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(**{field.name: field.value for field in fields})


def normalization_gap(waveform: np.ndarray) -> float:
    """The largest difference, by design, between transformers' normalization of ``waveform`` and s3prl's:
    |x - mean| * |1/sqrt(var + 1e-7) - 1/sqrt(var + 1e-5)|. Against the recording's level it is a scale
    difference of 1 - sqrt((var + 1e-7) / (var + 1e-5)): 4.6 % at 0.01 RMS, 0.002 % at 0.5."""
    x = np.asarray(waveform, dtype=np.float64)
    mean, var = x.mean(), x.var()
    return float(np.abs(x - mean).max() * abs(1 / np.sqrt(var + TRANSFORMERS_EPS) - 1 / np.sqrt(var + S3PRL_EPS)))


def scale_difference(waveform: np.ndarray) -> float:
    var = float(np.asarray(waveform, dtype=np.float64).var())
    return 1 - float(np.sqrt((var + TRANSFORMERS_EPS) / (var + S3PRL_EPS)))
