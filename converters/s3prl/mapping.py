"""S3PRL runner-checkpoint keys to transformers head keys, one rule per tensor.

Source keys are the checkpoint's entries flattened as ``Downstream.<key>`` and ``Featurizer.<key>``;
target keys are the head's serialized names in a ``<Family>For<Head>`` model. The base model's own
weights come from the base model directory, not from these rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from converters.mapping import Discard, KeyMapping, Rename, Rule
from converters.s3prl.families import Head

D = "Downstream."


# Runs once, at import, where mutmut cannot switch mutants (hence "no mutate"); the rules it builds are
# pinned by tests/test_s3prl_properties.py and the equivalence tests against s3prl.
def _linear(source: str, target: str) -> tuple[Rule, Rule]:
    weight = Rename(f"{source}.weight", f"{target}.weight")  # pragma: no mutate
    bias = Rename(f"{source}.bias", f"{target}.bias")  # pragma: no mutate
    return weight, bias  # pragma: no mutate


# The expert's best dev score, saved as a buffer; no part of the model.
_BEST_SCORE = Discard(D + "best_score")

HEAD_RULES: dict[Head, tuple[Rule, ...]] = {
    # speech_commands / voxceleb1 / emotion / fluent_commands experts: projector + UtteranceLevel
    # (MeanPooling, then a FrameLevel post_net without hidden layers)
    Head.SEQUENCE: (
        *_linear(D + "projector", "projector"),
        *_linear(D + "model.post_net.linear", "classifier"),
        _BEST_SCORE,
    ),
    # diarization expert with rnn_layers: 0: one linear over the upstream features
    Head.FRAME: (
        *_linear(D + "model.linear", "classifier"),
        _BEST_SCORE,
    ),
    # sv_voxceleb1 expert: connector, XVector's five TDNNs, statistic pooling, UtteranceExtractor,
    # AMSoftmaxLoss (its W is hidden x speakers, as transformers' objective.weight)
    Head.XVECTOR: (
        *_linear(D + "connector", "projector"),
        *_linear(D + "model.framelevel_feature_extractor.module.{n}.kernel", "tdnn.{n}.kernel"),
        *_linear(D + "model.utterancelevel_feature_extractor.linear1", "feature_extractor"),
        *_linear(D + "model.utterancelevel_feature_extractor.linear2", "classifier"),
        Rename(D + "objective.W", "objective.weight"),
        _BEST_SCORE,
    ),
}

# s3prl's Featurizer softmaxes ``weights`` over the hidden states, as transformers does ``layer_weights``.
LAYER_WEIGHTS = Rename("Featurizer.weights", "layer_weights")


def head_mapping(head: Head, weighted_layer_sum: bool) -> KeyMapping:
    return KeyMapping(HEAD_RULES[head] + ((LAYER_WEIGHTS,) if weighted_layer_sum else ()))


@dataclass(frozen=True)
class Unrepresentable:
    """Keys of a trained head that transformers' head has no place for, and why."""

    pattern: str  # regular expression over flattened source keys
    reason: str

    def matches(self, key: str) -> bool:
        return re.match(self.pattern, key) is not None


UNREPRESENTABLE = (
    Unrepresentable(
        r"Downstream\.model\.rnn\.",
        "the diarization head has RNN layers (s3prl's default rnn_layers: 1); transformers' frame head is a "
        "single linear layer, so only rnn_layers: 0 checkpoints convert",
    ),
    Unrepresentable(
        r"Downstream\.model\.framelevel_feature_extractor\.module\.\d+\.bn\.",
        "the x-vector TDNNs were trained with batch_norm: True; transformers' TDNN layers have no batch norm",
    ),
    Unrepresentable(
        r"Downstream\.model\.(pre_net|post_net\.hiddens)\.",
        "the utterance head has hidden layers (pre_net or post_net hiddens); transformers' sequence head is "
        "projector, mean pooling and one linear layer",
    ),
)
