"""README's performance figures are the benchmark's last results, not numbers typed in by hand."""

from __future__ import annotations

import pytest

from bench import summary


@pytest.mark.parametrize("name", ["ratios", "medians"])
def test_readme_holds_the_figures_of_the_last_benchmark_run(name: str) -> None:
    results = summary.load()
    readme = summary.README.read_text()
    assert summary.readme_block(readme, name) == summary.readme_blocks(results)[name], (
        "README.md's figures differ from bench/results.json: python -m bench.summary --readme"
    )
