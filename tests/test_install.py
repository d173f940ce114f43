"""The package as a user installs it: a wheel built from this checkout, installed into a fresh virtual
environment, its commands run from there (slow: it builds and installs).

The fresh environment takes the wheel's own files only; its heavy dependencies (torch, transformers, timm,
s3prl: 6 GB) are read from this test's environment through a path file, not installed again, so what is
tested is the wheel: its commands, its modules, its data files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest

from converters import registry
from fixtures.contract_tests import argv, example_options

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.interpreter, pytest.mark.process]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh environment's bin directory."""
    work = tmp_path_factory.mktemp("install")
    # Built from a copy of what the package is made of: pip builds in the source tree, and setuptools' build/
    # and egg-info would be left in the checkout (and raced over by two tox environments running at once).
    source = work / "source"
    shutil.copytree(ROOT / "converters", source / "converters", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work), str(source)]
    subprocess.run(build, check=True)
    (wheel,) = work.glob("audio_checkpoint_converters-*.whl")
    environment = work / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return environment / "bin"


def test_the_wheel_holds_the_package_its_data_and_its_commands(installed: Path) -> None:
    located = subprocess.run([str(installed / "python"), "-c", "import converters; print(converters.__file__)"],
                             check=True, capture_output=True, text=True, cwd=installed).stdout  # fmt: skip
    assert str(installed.parent) in located and str(ROOT) not in located
    for name in registry.names():
        assert (installed / registry.get(name).command).is_file()
    assert (installed / "convert-checkpoint").is_file()


@pytest.mark.parametrize("name", registry.names())
def test_each_command_shows_its_help_and_converts_from_the_fresh_environment(
    name: str, installed: Path, artifacts: Any, tmp_path: Path
) -> None:
    converter = registry.get(name)
    command = str(installed / converter.command)
    shown = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: {converter.command} "), shown.stderr
    output = tmp_path / "out"
    done = subprocess.run([command, *argv(converter, example_options(converter, artifacts), output)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in output.iterdir()} == set(converter.files)
