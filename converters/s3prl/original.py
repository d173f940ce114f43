"""s3prl's own downstream heads (s3prl==0.4.18), assembled as its experts assemble them.

The experts (``s3prl/downstream/<task>/expert.py``) cannot be built without their datasets, so each
class here holds exactly the attributes its expert's ``__init__`` creates around s3prl's own modules
(``UtteranceLevel``, the diarization ``Model``, the sv_voxceleb1 ``Model`` with ``XVector``/``TDNN``,
``SP``, ``UtteranceExtractor`` and ``AMSoftmaxLoss``), so that its ``state_dict`` is the checkpoint's
``Downstream`` entry, and a ``forward`` that follows the expert's up to the head's outputs.
The upstream side is s3prl's own ``Featurizer``, given the transformers model's hidden states.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from s3prl.downstream.diarization.model import Model as DiarizationModel
from s3prl.downstream.model import UtteranceLevel
from s3prl.downstream.sv_voxceleb1.model import AMSoftmaxLoss
from s3prl.downstream.sv_voxceleb1.model import Model as SpeakerVerificationModel
from s3prl.upstream.interfaces import Featurizer
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from converters.s3prl.tasks import XVECTOR_SHORTENING


class UtteranceExpert(nn.Module):
    """speech_commands / voxceleb1 / emotion experts: ``projector`` then ``UtteranceLevel``."""

    def __init__(self, upstream_dim: int, projector_dim: int, num_labels: int) -> None:
        super().__init__()
        self.projector = nn.Linear(upstream_dim, projector_dim)
        self.model = UtteranceLevel(input_dim=projector_dim, output_dim=num_labels, pooling="MeanPooling")
        self.objective = nn.CrossEntropyLoss()
        self.register_buffer("best_score", torch.zeros(1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        lengths = torch.IntTensor([len(feature) for feature in features])
        predicted, _ = self.model(self.projector(pad_sequence(list(features), batch_first=True)), lengths)
        return predicted


class DiarizationExpert(nn.Module):
    """diarization expert: its ``Model`` over the upstream features (``rnn_layers`` as trained)."""

    def __init__(self, upstream_dim: int, num_speakers: int, rnn_layers: int = 0, hidden_size: int = 512) -> None:
        super().__init__()
        self.model = DiarizationModel(upstream_dim, num_speakers, rnn_layers=rnn_layers, hidden_size=hidden_size)
        self.register_buffer("best_score", torch.zeros(1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.model(pad_sequence(list(features), batch_first=True))


class SpeakerVerificationExpert(nn.Module):
    """sv_voxceleb1 expert with the XVector module, SP pooling, UtteranceExtractor, AMSoftmaxLoss."""

    def __init__(self, upstream_dim: int, input_dim: int, agg_dim: int, num_speakers: int,
                 batch_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.connector = nn.Linear(upstream_dim, input_dim)
        self.model = SpeakerVerificationModel(
            input_dim=input_dim,
            agg_dim=agg_dim,
            agg_module_name="SP",
            module_name="XVector",
            utterance_module_name="UtteranceExtractor",
            hparams={"agg_dim": agg_dim, "dropout_p": 0.0, "batch_norm": batch_norm},
        )
        self.objective = AMSoftmaxLoss(hidden_dim=input_dim, speaker_num=num_speakers)
        self.register_buffer("best_score", torch.ones(1) * 100)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every stage, as the expert computes them (its attention mask included)."""
        padded = pad_sequence(list(features), batch_first=True)
        mask = pad_sequence([torch.ones(len(f) - XVECTOR_SHORTENING) for f in features], batch_first=True)
        mask = (1.0 - mask) * -100000.0
        frames = self.model.framelevel_feature_extractor(self.connector(padded), mask[:, None, None])
        pooled = self.model.agg_method(frames, mask)
        extractor = self.model.utterancelevel_feature_extractor
        return {
            "tdnn": frames,
            "pooling": pooled,
            "inference": extractor.inference(pooled),  # what the expert scores trials with
            "training": extractor(pooled),
        }


class ShapeOnlyUpstream(nn.Module):
    """What s3prl's Featurizer asks of its upstream when it is built: how many hidden states, how wide.

    The Featurizer learns that by running the upstream once on a second of noise. The answer is in the
    base model's config, so no forward of a (possibly 300M-parameter) model is spent on it; the hidden
    states the Featurizer then weighs are read while the model runs (``upstream_hidden_states``).
    """

    def __init__(self, config: Any, downsample_rate: int) -> None:
        super().__init__()
        self.layers = config.num_hidden_layers + 1  # the encoder's input, then every layer's output
        self.width = config.hidden_size
        self.downsample_rate = downsample_rate

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        frames = max(len(wav) for wav in wavs) // self.downsample_rate
        return {"hidden_states": [torch.zeros(len(wavs), frames, self.width) for _ in range(self.layers)]}


@contextlib.contextmanager
def upstream_hidden_states(base_model: Any) -> Iterator[list[torch.Tensor]]:
    """The hidden states s3prl's upstream experts hand the Featurizer, read while ``base_model`` runs.

    s3prl's wav2vec2, hubert, wavlm, unispeech_sat and data2vec experts hook the input of every encoder
    layer and the encoder's output (``add_hook("self.model.encoder.layers[i]", input[0])``, then
    ``add_hook("self.model.encoder", output[0])``). The same hooks here give the reference independently of
    transformers' ``output_hidden_states`` bookkeeping: with a final encoder LayerNorm (stable-layer-norm
    models, Wav2Vec2Conformer), transformers 5 leaves that norm out of ``hidden_states[-1]``, s3prl does not.
    """
    states: list[torch.Tensor] = []
    encoder = base_model.encoder
    handles = [layer.register_forward_pre_hook(lambda m, args: states.append(args[0])) for layer in encoder.layers]
    handles.append(encoder.register_forward_hook(lambda m, args, out: states.append(out[0])))
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


class _Capture:
    """Stands in for an upstream's model: keeps what s3prl's expert hands it."""

    def extract_features(self, padded_wav: torch.Tensor, padding_mask: torch.Tensor | None = None,
                         mask: Any = None) -> tuple[None, None]:  # fmt: skip
        self.padded_wav, self.padding_mask = padded_wav, padding_mask
        return None, None


def upstream_input(waveforms: Sequence[np.ndarray], normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What s3prl's upstream expert hands its model for a batch of recordings: the padded waveforms and the padding
    mask (True where padded), computed by s3prl's own code: its WavLM expert's ``forward``, on a stand-in that holds
    the upstream's ``normalize`` and, for a model, what keeps its inputs. The wav2vec2, hubert, unispeech_sat and
    data2vec experts preprocess alike (tests/test_s3prl_preprocessing.py holds their sources to it); this one imports
    with torch alone (theirs fetch checkpoints: requests, omegaconf)."""
    from s3prl.upstream.wavlm.expert import UpstreamExpert

    model = _Capture()
    stand_in = SimpleNamespace(cfg=SimpleNamespace(normalize=normalize), model=model)
    UpstreamExpert.forward(stand_in, [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in waveforms])
    assert model.padding_mask is not None
    return model.padded_wav, model.padding_mask


def featurizer(base_model: Any, layer_selection: int | None = None) -> Featurizer:
    """s3prl's Featurizer over a transformers base model's hidden states (its print-outs silenced).

    ``layer_selection`` is the runner's ``-l``: one hidden state, and then no ``weights``. ``normalize`` keeps
    s3prl's default (False): checkpoints trained with upstream_feature_normalize are refused.
    """
    strides = base_model.config.conv_stride
    rate = int(torch.tensor(strides).prod().item())
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return Featurizer(
            ShapeOnlyUpstream(base_model.config, rate),
            upstream_device="cpu",
            layer_selection=layer_selection,
        ).eval()


def select(featurizer_module: Featurizer, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
    """What s3prl's Featurizer hands the head: the selected hidden state, or the weighted sum (softmax over
    ``weights``) of them all; its ``forward`` without the split into per-utterance lists."""
    feature = featurizer_module._select_feature({"hidden_states": list(hidden_states)})
    if isinstance(feature, list | tuple):
        feature = featurizer_module._weighted_sum(list(feature))
    return feature
