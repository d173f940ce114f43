"""Every check and test README names exists: a check of a converter, a test, or a test module (README's tables of
checks are read by people choosing what to trust; a renamed check must not live on there)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
NAMED = re.compile(r"(?<![A-Za-z0-9_])test_[a-z0-9_]*[a-z0-9]")


def defined() -> set[str]:
    found = {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    for folder in ("converters", "tests", "fixtures"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r"def (test_[a-z0-9_]+)\(", path.read_text(encoding="utf-8")))
    return found


def test_every_check_and_test_readme_names_exists() -> None:
    named = set(NAMED.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert named, "README names no check: the pattern is wrong"
    assert sorted(named - defined()) == []


def test_readmes_table_of_the_generic_checks_is_their_order_and_mode() -> None:
    """README's table of the generic checks: each one, its order and its mode, as converters/checks.py marks them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| order | check | runs when |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        order, check, when = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((float(order), check.strip("`"), when.split(" (")[0]))
    tree = ast.parse((ROOT / "converters" / "checks.py").read_text(encoding="utf-8"))
    marked = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "check":
                kwargs = {k.arg: ast.literal_eval(k.value) for k in decorator.keywords}
                mode = {"convert": "converting", "verify": "verifying"}.get(str(kwargs.get("mode")), "always")
                marked.append((float(kwargs["order"]), node.name, mode))
    assert rows == sorted(marked, key=lambda row: row[0])


def test_readme_lists_every_registered_converters_command() -> None:
    from converters import registry

    head = (ROOT / "README.md").read_text(encoding="utf-8").split("## Installing the commands")[0]
    assert [name for name in registry.names() if f"(`{registry.get(name).command}`)" not in head] == []
