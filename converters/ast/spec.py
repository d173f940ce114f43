"""What fixes an AST model's function besides its weights, and the original repository's recipes that set it.

The original ``ASTModel(label_dim, fstride, tstride, input_fdim, input_tdim, model_size)`` (YuanGongND/ast
``src/models/ast_models.py``) splits a spectrogram of ``input_fdim`` mel bins by ``input_tdim`` frames into 16x16
patches at strides ``fstride`` and ``tstride``; its dataloader normalizes the fbank with the run's
``dataset_mean`` and ``dataset_std``. The weights fix the backbone's sizes, the label count and the number of
position rows, which the strides, bins and length must fit; the rest comes from the run: its options
(``src/run.py``: ``--fstride --tstride --audio_length --dataset_mean --dataset_std --label-csv``) or a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

PATCH = 16  # the original's patch side, whatever the strides
NUM_MEL_BINS = 128  # the original's input_fdim, which every recipe uses


@dataclass(frozen=True)
class Recipe:
    """A training recipe of the original repository (``egs/<name>/run*.sh``, ``src/run.py``): its strides, input
    length, normalization statistics and label set."""

    name: str
    labels_file: str  # in converters/data/ast/
    num_labels: int
    hub_label_file: str | None  # huggingface/label-files, where the seed script read it
    feature_mean: float
    feature_std: float
    max_length: int
    stride: int = 10


AUDIOSET = Recipe("audioset", "class_labels_indices.csv", 527, "audioset-id2label.json", -4.2677393, 4.5689974, 1024)
ESC50 = Recipe("esc50", "esc_class_labels_indices.csv", 50, None, -6.6268077, 5.358466, 512)
SPEECH_COMMANDS = Recipe(
    "speechcommands",
    "speechcommands_class_labels_indices.csv",
    35,
    "speech-commands-v2-id2label.json",
    -6.845978,
    5.5654526,
    128,
)
RECIPES = {recipe.name: recipe for recipe in (AUDIOSET, ESC50, SPEECH_COMMANDS)}


@dataclass(frozen=True)
class Spec:
    """Everything besides the weights that fixes the function from a recording: the patch grid, the input the
    extractor makes, and the label names."""

    fstride: int
    tstride: int
    max_length: int  # input_tdim: frames, padded or cut to
    feature_mean: float
    feature_std: float
    num_mel_bins: int = NUM_MEL_BINS
    labels: tuple[str, ...] | None = None  # by output index; None: a model without a head

    @property
    def f_dim(self) -> int:
        return (self.num_mel_bins - PATCH) // self.fstride + 1

    @property
    def t_dim(self) -> int:
        return (self.max_length - PATCH) // self.tstride + 1

    @property
    def positions(self) -> int:
        """Position rows the weights hold for this grid: every patch, and the two tokens."""
        return self.f_dim * self.t_dim + 2

    def described(self) -> str:
        labels = f", {len(self.labels)} labels" if self.labels is not None else ""
        return (f"strides {self.fstride}/{self.tstride}, {self.num_mel_bins} mel bins, {self.max_length} frames"
                f"{labels}")  # fmt: skip
