"""What the report module makes of a session: lines that fit, non-finite numbers in JSON, and --report
without matplotlib."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from converters import registry
from converters.report import WIDTH, Report, Row, schema, stages_of, wrap, write
from fixtures.contract_tests import example_options, run


def test_a_long_line_is_wrapped_without_breaking_a_path() -> None:
    path = "/a/very/long/path/" + "x" * 70 + "/model.safetensors"
    text = wrap(f"convert-x: error: the file {path} has a key that no rule consumes; nothing was written")
    assert all(len(line) <= WIDTH for line in text.splitlines() if path not in line)
    assert path in text.split()  # whole, on a line of its own where it does not fit beside others
    assert all(line.startswith("    ") for line in text.splitlines()[1:])


def test_infinite_and_nan_differences_are_strings_in_json() -> None:
    from converters.locator import Divergence, StageDifference

    divergence = Divergence((StageDifference("a", math.inf, 1e-5), StageDifference("b", math.nan, 1e-5)))
    report = Report("convert-x", "x", "refused", 1, "refused", [Row("test_a", "failed", "inf", math.inf, 1e-5)],
                    stages_of(divergence))  # fmt: skip
    document = json.loads(json.dumps(report.to_json()))  # strict JSON: no Infinity, no NaN
    jsonschema.validate(document, schema())
    assert [s["difference"] for s in document["stages"]] == ["inf", "nan"]
    assert document["stages"][0]["first"] is True and document["checks"][0]["difference"] == "inf"


def test_without_matplotlib_the_report_says_how_to_install_it(
    artifacts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # type: ignore[arg-type]
    converter = registry.get("ast")
    reports = tmp_path / "report"
    result = run(converter, example_options(converter, artifacts), tmp_path / "out", "--report", str(reports))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in reports.iterdir()) == ["report.json", "report.md"]
    assert "--report: divergence.png needs matplotlib, which is not installed: pip install matplotlib" in result.stderr


def test_a_report_with_no_stages_says_so(tmp_path: Path) -> None:
    notes = write(Report("convert-x", "x", "refused", 1, "refused early"), tmp_path)
    assert notes == ["--report: no divergence.png: the comparison was not located stage by stage"]
    assert "The comparison was not located stage by stage." in (tmp_path / "report.md").read_text()
