"""One-line causes: what a refusal prints is one line, whatever the error it came from said."""

from __future__ import annotations

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
