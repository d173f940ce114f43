"""README's claim, held to the code: a converter is its folder and one registry line. Nothing the package, the
benchmark, the tools, the fixtures or the build and CI files run names it (its name as a string, its module path);
they read the registry. Comments and prose may mention it. The converters that predate the rule are named by
environments and fixtures of their own (``LEGACY``); every converter registered since is held to it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from converters import registry

ROOT = Path(__file__).parents[1]
LEGACY = {"ast", "s3prl"}  # tox's ast-torchaudio and s3prl-fork environments, conftest's fixtures, tools of theirs
CODE = ("converters", "bench", "tools", "fixtures")
CONFIG = ("tox.ini", "pyproject.toml", "setup.py", ".ci/run", "conftest.py")


def naming(name: str, text: str) -> bool:
    return text == name or f"converters.{name}" in text or text.startswith((f"{name}-", f"{name}:", f"{name}_"))


def named_in_code(name: str) -> list[str]:
    found = []
    own = ROOT / "converters" / name
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if own in path.parents or path == ROOT / "converters" / "registry.py" or "gate" in path.parts[-2:-1]:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and naming(name, node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    return found


def named_in_config(name: str) -> list[str]:
    found = []
    for relative in CONFIG:
        for number, line in enumerate((ROOT / relative).read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0] if not relative.endswith(".py") else line
            if relative.endswith(".py") and line.strip().startswith(("#", '"', "'")):
                continue
            if name in code.split() or f"converters.{name}" in code or f"{name}-" in code:
                found.append(f"{relative}:{number}: {line.strip()[:60]}")
    return found


@pytest.mark.parametrize("name", sorted(set(registry.names()) - LEGACY))
def test_a_converter_is_named_nowhere_but_its_folder_and_its_registry_line(name: str) -> None:
    assert named_in_code(name) + named_in_config(name) == []


def test_the_check_finds_a_converter_that_is_named_elsewhere() -> None:
    """The legacy converters are named by files of their own: the check above sees them (so it could fail)."""
    assert any("s3prl-fork" in line or "s3prl" in line for line in named_in_config("s3prl"))
    assert named_in_code("ast")
