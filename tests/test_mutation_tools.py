"""The per-module mutation score: mutants read off mutmut's rewritten module, results off ``mutmut results``."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import pytest

from tools.mutation_modules import mutants_of, score


def test_a_modules_score_is_what_was_caught_of_its_checked_mutants(tmp_path: Path) -> None:
    module = tmp_path / "converters" / "toy.py"
    module.parent.mkdir()
    module.write_text(
        "def x_f__mutmut_1(a):\n    pass\ndef x_f__mutmut_2(a):\n    pass\n"
        "def xǁCǁm__mutmut_1(self):\n    pass\ndef x_f__mutmut_orig(a):\n    pass\n"
    )
    names = mutants_of("converters.toy", tmp_path)
    assert names == ["converters.toy.x_f__mutmut_1", "converters.toy.x_f__mutmut_2", "converters.toy.xǁCǁm__mutmut_1"]
    results = (
        "    converters.toy.x_f__mutmut_2: survived\n    converters.toy.xǁCǁm__mutmut_1: not checked\n"
        "    converters.other.x_g__mutmut_1: survived\n"
    )
    assert score(names, results) == (50.0, {"converters.toy.x_f__mutmut_2": "survived"}, 1)


def test_before_any_run_the_mutants_are_those_mutmut_makes_of_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "converters" / "toy.py"
    source.parent.mkdir()
    source.write_text("def f(a):\n    return a + 1\n")
    made: list[tuple[str, Path]] = []

    def write_all_mutants_to_file(*, out: io.StringIO, source: str, filename: Path) -> None:  # mutmut's step
        made.append((source, filename))
        out.write("def x_f__mutmut_orig(a):\n    return a + 1\ndef x_f__mutmut_1(a):\n    return a - 1\n")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(
        sys.modules, "mutmut.__main__", types.SimpleNamespace(write_all_mutants_to_file=write_all_mutants_to_file)
    )
    assert mutants_of("converters.toy", tmp_path / "no-run-yet") == ["converters.toy.x_f__mutmut_1"]
    assert made == [("def f(a):\n    return a + 1\n", Path("converters/toy.py"))]


def test_a_sample_draws_from_none_of_the_excluded_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.mutation_modules import main

    module = tmp_path / "mutants" / "converters" / "toy.py"
    module.parent.mkdir(parents=True)
    module.write_text("".join(f"def x_f__mutmut_{i}(a):\n    pass\n" for i in range(1, 7)))
    (tmp_path / "earlier.txt").write_text("converters.toy.x_f__mutmut_2\nconverters.toy.x_f__mutmut_5\n")
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "converters.toy", "10", "--seed", "3", "--exclude", "earlier.txt"]) == 0
    drawn = capsys.readouterr().out.split()
    assert sorted(drawn) == [f"converters.toy.x_f__mutmut_{i}" for i in (1, 3, 4, 6)]
    assert main(["sample", "converters.toy", "2", "--seed", "3"]) == 0
    assert len(set(capsys.readouterr().out.split())) == 2
