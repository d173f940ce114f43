"""The per-module mutation score: mutants read off mutmut's rewritten module, results off ``mutmut results``."""

from __future__ import annotations

from pathlib import Path

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
