"""One-line causes: what a refusal prints is one line, whatever the error it came from said."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from converters.errors import ConversionError, first_line
from converters.safe_load import _first_line


def test_a_refusal_is_one_line() -> None:
    assert str(ConversionError("key  x\n has shape (2,)\t")) == "key x has shape (2,)"


def test_the_first_line_of_an_error_or_its_type_when_it_says_nothing() -> None:
    assert first_line(ValueError("  \nbad header\nsecond line\n")) == "bad header"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("   ")) == "OSError"


def test_torch_advice_is_cut_after_the_first_sentence() -> None:
    error = RuntimeError("PytorchStreamReader failed reading zip archive. Try again with a file.\nMore advice.")
    assert _first_line(error) == "PytorchStreamReader failed reading zip archive"
    assert _first_line(RuntimeError("invalid load key, 'x'.")) == "invalid load key, 'x'"


header = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1).map(lambda s: " ".join(s.split()) + ":")
fault = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1).filter(
    lambda s: " ".join(s.split()) and not " ".join(s.split()).endswith(":")
)


@given(headers=st.lists(header.filter(lambda h: h != ":"), max_size=3), cause=fault,
       after=st.lists(st.text(st.characters(blacklist_categories=("Cc", "Cs"))), max_size=3))  # fmt: skip
def test_the_cause_is_the_first_line_that_is_not_a_header(headers: list[str], cause: str, after: list[str]) -> None:
    """Wherever the line naming the fault sits, after any number of header lines ending in ':'."""
    text = "\n".join([*headers, "\t" + cause, *after])
    assert first_line(RuntimeError(text)) == cause.strip()


def test_torchs_state_dict_error_gives_the_line_naming_the_key() -> None:
    with pytest.raises(RuntimeError) as error:
        nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(2, 2)})
    assert str(error.value).startswith("Error(s) in loading state_dict for Linear:")
    assert first_line(error.value) == 'Missing key(s) in state_dict: "bias".'


def test_transformers_validation_error_gives_the_line_naming_the_field() -> None:
    import transformers

    with pytest.raises(Exception) as error:
        transformers.Wav2Vec2Config(conv_dim=(32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4))
    cause = first_line(error.value)  # 5.x nests transformers' ValueError under a validator's header line
    assert "Configuration for convolutional layers is incorrect" in cause and "len(config.conv_dim) = 2" in cause


def test_a_multi_line_refusal_is_one_line_that_keeps_every_part() -> None:
    error = ConversionError("config c.json disagrees:\n  num_labels is 7, but 5\n  hidden_act is 'relu'")
    assert first_line(error) == str(error) == "config c.json disagrees: num_labels is 7, but 5 hidden_act is 'relu'"


def test_a_checks_cause_drops_pytests_exception_type(tmp_path: Path) -> None:
    from converters.session import run_checks

    (tmp_path / "checks_causes.py").write_text(
        "import pytest\n"
        "def test_fail():\n    pytest.fail('logits differ by 0.5\\nstage table')\n"
        "def test_assert():\n    assert 1 == 2, 'x has shape (2,)'\n"
        "def test_header():\n"
        "    raise RuntimeError('Error(s) in loading state_dict for M:\\n\\tMissing key(s): \"b\".')\n"
    )
    outcomes = {o.check: (o.result, o.cause) for o in run_checks(tmp_path / "checks_causes.py", object()).outcomes}
    assert outcomes == {
        "test_fail": ("failed", "logits differ by 0.5"),
        "test_assert": ("failed", "x has shape (2,)"),
        "test_header": ("internal error", 'Missing key(s): "b".'),
    }
