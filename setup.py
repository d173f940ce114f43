"""The console scripts, one per converter in ``converters/registry.py``'s ``BUILT_IN`` (read, not imported): a
converter added there has its ``convert-<name>-checkpoint`` without a line here or in pyproject.toml. Everything
else is pyproject.toml's."""

import ast
from pathlib import Path

from setuptools import setup


def built_in() -> list[str]:
    tree = ast.parse(Path(__file__).with_name("converters").joinpath("registry.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "BUILT_IN" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("converters/registry.py holds no BUILT_IN")


scripts = [f"convert-{name}-checkpoint = converters.scripts:{name}" for name in built_in()]
setup(
    entry_points={
        "console_scripts": [*scripts, "convert-checkpoint = converters.cli:script"],
        "pytest11": ["audio_checkpoint_converters = converters.plugin"],  # pytest --conversions
    }
)
