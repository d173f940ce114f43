"""A converted model against s3prl's own head, fed the same upstream hidden states, stage by stage.

The stages are read with forward hooks on both sides (``converters.locator``): the report names the first
stage where the converted head leaves s3prl's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.errors import ConversionError
from converters.locator import Divergence, Stage, StageDifference, Tap, first_input, largest_difference, locate
from converters.recordings import Recording
from converters.s3prl.checkpoint import S3PRLCheckpoint
from converters.s3prl.convert import Target, base_attribute
from converters.s3prl.families import Head
from converters.s3prl.original import (
    DiarizationExpert,
    SpeakerVerificationExpert,
    UtteranceExpert,
    featurizer,
    select,
    upstream_hidden_states,
    upstream_input,
)
from converters.s3prl.preprocessing import PADDED, S3PRL_RECORDINGS, normalization_gap, scale_difference
from converters.s3prl.taps import converted_head_taps

# Every stage must agree within ATOL + RTOL x its magnitude on s3prl's side: float32 sums taken in another
# order (s3prl's unfold + Linear, transformers' conv1d) round apart in proportion to the values summed. At
# wav2vec2-large's sizes the first TDNN sums 2560 products per value and parts by 2.3e-6 of its magnitude
# (3.2e-5 at 13.6); a mistake in the head moves a stage by the order of its magnitude.
ATOL = 1e-5
RTOL = 1e-5


def s3prl_expert(target: Target, checkpoint: S3PRLCheckpoint) -> nn.Module:
    """s3prl's head for the config's sizes, holding the checkpoint's Downstream weights (strictly).

    ``best_score``, the expert's best dev score, is the one key a checkpoint may lack: it is training
    bookkeeping that no forward reads, and checkpoints trimmed to their weights leave it out.
    """
    config: Any = target.config  # the family's config class; its head fields are set
    expert: nn.Module
    if target.head is Head.SEQUENCE:
        expert = UtteranceExpert(config.hidden_size, config.classifier_proj_size, config.num_labels)
    elif target.head is Head.FRAME:
        expert = DiarizationExpert(config.hidden_size, config.num_labels)
    else:
        expert = SpeakerVerificationExpert(
            config.hidden_size, config.tdnn_dim[0], config.tdnn_dim[-1], config.num_labels
        )
    state = dict(checkpoint.downstream)
    state.setdefault("best_score", expert.state_dict()["best_score"])
    expert.load_state_dict(state, strict=True)
    return expert.eval()


def expert_head_taps(expert: nn.Module, head: Head) -> list[tuple[str, Tap]]:
    """s3prl's side of the same stages: its expert's own modules."""
    s3prl: Any = expert
    if head is Head.SEQUENCE:
        return [("weighted sum", Tap(s3prl.projector, first_input)), ("projector", Tap(s3prl.projector)),
                ("pooling", Tap(s3prl.model.pooling)), ("classifier", Tap(s3prl.model.post_net))]  # fmt: skip
    if head is Head.FRAME:
        return [("weighted sum", Tap(s3prl.model.linear, first_input)), ("classifier", Tap(s3prl.model.linear))]
    xvector = s3prl.model
    extractor = xvector.utterancelevel_feature_extractor
    return [
        ("weighted sum", Tap(s3prl.connector, first_input)),
        ("projector", Tap(s3prl.connector)),
        *((f"tdnn {n}", Tap(tdnn)) for n, tdnn in enumerate(xvector.framelevel_feature_extractor.module)),
        ("pooling", Tap(xvector.agg_method)),
        ("linear1", Tap(extractor.linear1)),
        ("linear2", Tap(extractor.linear2)),
    ]


def head_stages(model: Any, expert: nn.Module, head: Head) -> list[Stage]:
    """The head's stages, s3prl's module (original) beside transformers' (converted), in forward order, paired by
    name (a converted head with fewer TDNN layers diverges at the pooling)."""
    theirs = dict(converted_head_taps(model, head))
    return [Stage(name, tap, theirs[name]) for name, tap in expert_head_taps(expert, head) if name in theirs]


def _worst(found: list[Divergence]) -> Divergence:
    """Per stage, the run furthest past (or closest to) its tolerance, over several runs."""
    return Divergence(
        tuple(
            max(runs, key=lambda s: s.difference / s.tolerance) for runs in zip(*(d.stages for d in found), strict=True)
        )
    )


@dataclass(frozen=True)
class Compared:
    divergence: Divergence
    notes: tuple[str, ...]  # each recording's input and output difference, for the report
    measured: dict[str, tuple[float, float]]  # each recording's output (and the padded batch's): difference, tolerance


@dataclass(frozen=True)
class _S3PRLRun:
    """s3prl's pipeline on one batch: what its upstream expert handed the model, and what its head computed."""

    wav: torch.Tensor
    attention: torch.Tensor  # 1 where a sample is the recording's (s3prl's padding mask, inverted)
    out: Any  # the model's outputs on s3prl's input: the same function, the model side alone
    reference: Any  # s3prl's head's outputs
    lengths: list[int]


class _Pipelines:
    """A user's function (the directory's extractor, then the model) beside s3prl's, on batches of recordings."""

    def __init__(self, model: Any, checkpoint: S3PRLCheckpoint, target: Target, extractor: Any) -> None:
        self.model, self.target, self.extractor = model, target, extractor
        self.expert = s3prl_expert(target, checkpoint)
        self.base = getattr(model, base_attribute(model))
        # As the runner built it: a weighted sum where it saved weights, else the layer it was told (-l).
        layer = checkpoint.args.get("upstream_layer_selection")
        self.weighted = "weights" in checkpoint.featurizer
        self.featurizer = featurizer(self.base, None if self.weighted else (-1 if layer is None else layer))
        self.featurizer.load_state_dict(checkpoint.featurizer, strict=True)
        self.normalize = target.normalizes

    def s3prl(self, batch: list[np.ndarray]) -> _S3PRLRun:
        wav, padded = upstream_input(batch, self.normalize)
        attention = (~padded).long()
        model = self.model
        if self.target.family.s3prl_upstream:
            with upstream_hidden_states(self.base) as hidden:
                out = model(input_values=wav, attention_mask=attention, output_hidden_states=True)
        else:
            output: list[torch.Tensor] = []
            handle = self.base.register_forward_hook(lambda module, args, out: output.append(out[0]))
            try:
                out = model(input_values=wav, attention_mask=attention, output_hidden_states=True)
            finally:
                handle.remove()
            hidden = list(out.hidden_states)
            if not self.weighted:  # the one feature a model hands on is its output (SEW's is upsampled again)
                hidden[-1] = output[0]
        summed = select(self.featurizer, hidden)
        lengths = self.base._get_feat_extract_output_lengths(attention.sum(-1)).tolist()
        reference = self.expert([summed[i, :n] for i, n in enumerate(lengths)])
        return _S3PRLRun(wav, attention, out, reference, lengths)

    def users_inputs(self, batch: list[np.ndarray]) -> Any:
        try:
            return self.extractor(batch, sampling_rate=16000, padding=True, return_tensors="pt")
        except ValueError as error:  # a sampling rate other than 16 kHz, say
            raise ConversionError(f"the directory's feature extractor refuses a 16 kHz recording: {error}") from None

    def input_stage(self, batch: list[np.ndarray], run: _S3PRLRun, inputs: Any) -> tuple[StageDifference, str]:
        """The extractor's input values and mask against s3prl's; the tolerance is the float32 one plus, where s3prl
        normalizes, the eps difference by design (``normalization_gap``), derived from each recording."""
        gap = max(normalization_gap(w) for w in batch) if self.normalize else 0.0
        tolerance = gap + ATOL + RTOL * run.wav.abs().max().item()
        difference = largest_difference(run.wav, inputs["input_values"])
        mask, why = inputs.get("attention_mask"), ""
        if mask is None and bool((run.attention == 0).any()):
            why = "; it returns no attention mask, and s3prl passes its model a padding mask"
        elif mask is not None and not torch.equal(torch.as_tensor(mask).long(), run.attention):
            why = "; its attention mask is not s3prl's padding mask"
        if why:
            difference = math.inf
        scale = max(scale_difference(w) for w in batch)
        design = f"; eps by design: the two scales {100 * scale:.2g} % apart" if self.normalize else ""
        return StageDifference("input waveform", difference, tolerance, why.removeprefix("; ")), (
            f"largest difference {difference:.3g} (tolerance {tolerance:.3g}{design}){why}"
        )

    def outputs(self, found: Any, run: _S3PRLRun, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Utterance ``i``'s output, and s3prl's (x-vectors: s3prl scores trials with ReLU(linear1), transformers'
        ``embeddings`` is linear1: README)."""
        n = run.lengths[i]
        if self.target.head is Head.XVECTOR:
            return torch.relu(found.embeddings[i]), run.reference["inference"][i]
        if self.target.head is Head.FRAME:
            return found.logits[i, :n], run.reference[i, :n]
        return found.logits[i], run.reference[i]

    def output_stage(self, name: str, run: _S3PRLRun, inputs: Any, same: bool) -> StageDifference:
        """The user's outputs against s3prl's. Where the inputs differ by design (the eps), the tolerance adds what
        that difference carries to the outputs: the model's outputs on both inputs, side by side."""
        users = run.out if same else self.model(**inputs)
        worst = StageDifference(name, 0.0, ATOL)
        for i in range(len(run.lengths)):
            theirs, s3prl = self.outputs(users, run, i)
            carried = 0.0 if same else largest_difference(self.outputs(run.out, run, i)[0], theirs)
            found = StageDifference(name, largest_difference(s3prl, theirs),
                                    ATOL + RTOL * s3prl.abs().max().item() + carried)  # fmt: skip
            worst = max(worst, found, key=lambda stage: stage.difference / stage.tolerance)
        return worst


@torch.no_grad()
def compare_with_s3prl(
    model: Any, checkpoint: S3PRLCheckpoint, target: Target, extractor: Any,
    chosen: Sequence[Recording] = S3PRL_RECORDINGS,
) -> Compared:  # fmt: skip
    """From each recording, what a user computes (the directory's ``extractor``, then ``model``) against s3prl's
    pipeline: s3prl's upstream expert's own preprocessing (``upstream_input``), the base model as its upstream (the
    hidden states read as s3prl's experts read them), s3prl's Featurizer and its own head holding the checkpoint's
    weights. Stage by stage: the input (what the extractor makes of a recording against what s3prl hands its
    upstream), the head's stages on s3prl's input (the model side alone), then the outputs from the recording.

    One utterance at a time, because a padded frame would differ between the two by design at every frame-level
    stage (s3prl pads with zeros after the weighted sum, transformers runs the head over padded hidden states and
    masks later). Sequence and frame heads are also compared on one padded batch of them all, which is how they are
    used: the last row. The x-vector head is not: in padded batches s3prl's statistic pooling counts one padded
    frame (a difference by design, measured by the tests).
    """
    pipelines = _Pipelines(model, checkpoint, target, extractor)
    stages = head_stages(model, pipelines.expert, target.head)
    design = "by design: transformers normalizes with eps 1e-7, s3prl with 1e-5" if target.normalizes else ""
    preprocessing = "each waveform layer-normalized, " if target.normalizes else ""
    notes = [f"input waveform: s3prl's upstream expert's own preprocessing ({preprocessing}padded with zeros, a "
             "padding mask) against the directory's feature extractor:"]  # fmt: skip
    inputs_found, outputs_found, located = [], [], []

    def one(batch: list[np.ndarray], name: str, label: str, locate_head: bool) -> StageDifference:
        runs: list[_S3PRLRun] = []
        if locate_head:  # the head's stages, hooked while s3prl's pipeline runs
            located.append(locate(stages, lambda: runs.append(pipelines.s3prl(batch)), atol=ATOL, rtol=RTOL))
        else:
            runs.append(pipelines.s3prl(batch))
        inputs = pipelines.users_inputs(batch)
        stage, line = pipelines.input_stage(batch, runs[0], inputs)
        inputs_found.append(stage)
        notes.append(f"  {label}: {line}")
        same = not stage.note and torch.equal(inputs["input_values"], runs[0].wav)
        return pipelines.output_stage(name, runs[0], inputs, same)

    for recording in chosen:
        label = f"{recording.name} ({recording.seconds:g} s, {recording.level})"
        outputs_found.append(one([recording.waveform()], recording.name, label, locate_head=True))
    measured = {stage.stage: (stage.difference, stage.tolerance) for stage in outputs_found}
    padded = None
    if target.head is not Head.XVECTOR and len(chosen) > 1:
        batch = [r.waveform() for r in chosen]
        padded = one(batch, PADDED, f"a padded batch of the {len(chosen)}", locate_head=False)

    def worst(found: list[StageDifference]) -> StageDifference:
        return max(found, key=lambda stage: stage.difference / stage.tolerance)

    entry, output = worst(inputs_found), worst(outputs_found)
    rows = [replace(entry, note=entry.note or design), *_worst(located).stages,
            replace(output, stage="outputs from the recording", note=design)]  # fmt: skip
    notes.append(f"outputs from the recording: largest difference {output.difference:.3g} on {output.stage} "
                 f"(tolerance {output.tolerance:.3g})")  # fmt: skip
    if padded is not None:
        measured[PADDED] = (padded.difference, padded.tolerance)
        rows.append(replace(padded, stage="outputs, padded batch", note=design))
        notes.append(f"outputs, padded batch: largest difference {padded.difference:.3g} (tolerance "
                     f"{padded.tolerance:.3g})")  # fmt: skip
    return Compared(Divergence(tuple(rows)), tuple(notes), measured)
