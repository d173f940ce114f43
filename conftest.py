"""Shared test set-up: isolation from the user's hub cache, options, and artifacts built once per run."""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from hypothesis import settings

pytest_plugins = ["pytester"]  # tests/test_plugin.py runs a user's pytest in a directory of its own

ROOT = Path(__file__).parent
FIXTURES = ROOT / "fixtures"
GOLDENS = FIXTURES / "goldens"

settings.register_profile("default", max_examples=120)
settings.register_profile("deep", max_examples=2000)
# Mutation testing: the same cases every run (a score must be reproducible), no deadline under its trampolines.
settings.register_profile("mutation", max_examples=120, derandomize=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Tests must not depend on what a developer's Hugging Face cache holds, nor reach for the network;
# set before transformers is imported, and inherited by the commands the tests run.
os.environ["HF_HUB_OFFLINE"] = "1"
if "CONVERTERS_TEST_HF_HOME" not in os.environ:  # the run's first process; its xdist workers and forks share it
    os.environ["CONVERTERS_TEST_HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-empty-")
    atexit.register(shutil.rmtree, os.environ["CONVERTERS_TEST_HF_HOME"], ignore_errors=True)
os.environ["HF_HOME"] = os.environ["CONVERTERS_TEST_HF_HOME"]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Under xdist, share the cores between the workers: two workers each running torch on every core
# oversubscribe them, and the suite runs no faster than with one worker.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# Under mutation testing each mutant's run stops at its first failing test (-x): run the cheap library-level
# tests before those that convert whole checkpoints (a command's, a converter's contract, goldens, equivalence).
EXPENSIVE = ("cli", "converter", "golden", "equivalence", "divergence", "written", "crash")


def module_rank(stem: str) -> int:
    return sum(word in stem for word in EXPENSIVE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MUTANT_UNDER_TEST"):
        # A mutant runs under -x: its cheapest tests first, so a killed mutant costs the least. mutmut's stats
        # run measured every test (mutmut-stats.json, in the mutants/ directory the tests run from).
        stats = Path("mutmut-stats.json")
        duration = json.loads(stats.read_text()).get("duration_by_test", {}) if stats.exists() else {}
        items.sort(key=lambda item: (duration.get(item.nodeid, math.inf), module_rank(item.path.stem)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--published-dir",
        default=os.environ.get("AST_PUBLISHED_DIR"),
        help="directory with the real original AST checkpoints and sample audio (or env AST_PUBLISHED_DIR); "
        "see README 'Published checkpoints'",
    )


class SharedArtifacts:
    """Files built once per test run and shared by every xdist worker (the FileLock pattern)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str, build: Callable[[Path], object]) -> Path:
        path = self.root / name
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                partial = path.with_name(path.name + ".partial")
                build(partial)
                partial.rename(path)  # readers never see a half-built artifact
        return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SharedArtifacts:
    kept = os.environ.get("CONVERTERS_TEST_ARTIFACTS")
    if kept:  # one directory across many runs (mutation testing runs the suite once per mutant)
        Path(kept).mkdir(parents=True, exist_ok=True)
        return SharedArtifacts(Path(kept))
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has its own basetemp below a common parent: share that parent.
    root = base if worker_id == "master" else base.parent
    (root / "shared").mkdir(exist_ok=True)
    return SharedArtifacts(root / "shared")


@pytest.fixture(scope="session")
def published_dir(request: pytest.FixtureRequest) -> Path | None:
    value = request.config.getoption("--published-dir")
    return Path(value) if value else None


GOLDEN_DRIFT = "golden drift"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which goldens drifted and by how much, in one place (xdist carries user_properties to here)."""
    drifts = [value for report in terminalreporter.stats.get("failed", [])
              for key, value in report.user_properties if key == GOLDEN_DRIFT]  # fmt: skip
    if drifts:
        terminalreporter.section("golden drift (review, then `tox -e regen` to accept)")
        for line in drifts:
            terminalreporter.line(line)


@pytest.fixture
def golden(request: pytest.FixtureRequest, ndarrays_regression: object) -> Callable[..., None]:
    """``golden(name, {key: array}, atol=...)``: compare with fixtures/goldens/NAME.npz (`tox -e regen`)."""
    import numpy as np

    from fixtures.golden_files import GOLDENS, drift_of, write_sidecar

    regenerating = request.config.getoption("force_regen") or request.config.getoption("regen_all")

    def check(name: str, arrays: dict[str, np.ndarray], *, atol: float) -> None:
        path = GOLDENS / f"{name}.npz"
        try:
            ndarrays_regression.check(  # type: ignore[attr-defined]
                arrays, fullpath=path, default_tolerance={"atol": atol, "rtol": 0.0}
            )
        except AssertionError:
            if path.exists():  # drifted, not missing: say by how much, for the summary at the end of the run
                stored = np.load(path)
                for key, array in arrays.items():
                    drift = drift_of(stored[key], array) if key in stored.files else "not in the golden file"
                    request.node.user_properties.append((GOLDEN_DRIFT, f"{name}[{key}]: {drift} (atol {atol:g})"))
            raise
        finally:
            if regenerating:
                write_sidecar(path, arrays, atol)
        stored = np.load(path)
        for key, array in arrays.items():
            shown = (stored[key].shape, stored[key].dtype)
            assert shown == (array.shape, array.dtype), f"{path.name}[{key}] holds {shown}"

    return check


@pytest.fixture(scope="session")
def ast_checkpoint(artifacts: SharedArtifacts) -> Callable[..., Path]:
    """``ast_checkpoint(variant, size="tiny"|"full")``: a synthetic original checkpoint, built once per run."""
    from converters.ast.example import FULL, TINY, write_checkpoint

    def get(variant: object, size: str = "tiny") -> Path:
        backbone = {"tiny": TINY, "full": FULL}[size]
        name = f"ast-{variant.name}-{size}.pth"  # type: ignore[attr-defined]
        return artifacts.get(name, lambda path: write_checkpoint(path, variant, backbone))  # type: ignore[arg-type]

    return get


@pytest.fixture(scope="session")
def s3prl_case(artifacts: SharedArtifacts) -> Callable[..., object]:
    """``s3prl_case(family, head, size, stable=False, weighted=True)``: base model dir, classifier config and
    runner checkpoint; ``stable``: the base's encoder ends in a LayerNorm (do_stable_layer_norm); ``weighted``:
    the head weighs every hidden state (else it was trained on the last one, ``-l``)."""
    from converters.s3prl.example import (
        TINY,
        S3PRLCase,
        write_base_model,
        write_classifier_config,
        write_runner_checkpoint,
    )

    def get(family: Any, head: Any, size: Any = TINY, *, stable: bool = False, weighted: bool = True) -> S3PRLCase:
        stem = f"s3prl-{family.name}-{size.name}" + ("-stable" if stable else "")
        base = artifacts.get(stem, lambda p: write_base_model(p, family, size, stable))
        case = f"{stem}-{head.name}" + ("" if weighted else "-last-layer")
        config = artifacts.get(
            f"{case}.json", lambda p: write_classifier_config(p, family, head, size, weighted, stable)
        )
        checkpoint = artifacts.get(
            f"{case}.ckpt", lambda p: write_runner_checkpoint(p, base, family, head, size, weighted=weighted)
        )
        return S3PRLCase(family, head, size, base, config, checkpoint, stable, weighted)

    return get


@pytest.fixture
def hub_cache(tmp_path: Path) -> Callable[..., Path]:
    """``hub_cache(repo_id, filename, content, repo_type="dataset")``: a local Hugging Face cache holding a file.

    Returns the cache directory, to pass as HF_HUB_CACHE; lets tests exercise the offline resolution.
    """
    cache = tmp_path / "hub-cache"
    revision = "0" * 40

    def add(repo_id: str, filename: str, content: bytes, repo_type: str = "dataset") -> Path:
        repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / filename).write_bytes(content)
        return cache

    return add


@pytest.fixture(scope="session")
def fake_hub_server() -> Iterator[Any]:
    """The stand-in for the hub and for download hosts (``fixtures/fake_hub.py``): one per test process."""
    from fixtures.fake_hub import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def online(fake_hub_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A network that is the fake hub: HF_ENDPOINT at it, huggingface_hub online (its offline flag is read at
    import: set here as the environment would have), and caches of the test's own: the hub's, and torch.hub's
    (TORCH_HOME), both empty."""
    from huggingface_hub import constants

    fake_hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", fake_hub_server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return fake_hub_server
