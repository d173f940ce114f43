"""Shared test set-up: isolation from the user's hub cache, options, and artifacts built once per run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).parent
FIXTURES = ROOT / "fixtures"
GOLDENS = FIXTURES / "goldens"

# Tests must not depend on what a developer's Hugging Face cache holds, nor reach for the network;
# set before transformers is imported, and inherited by the commands the tests run.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-empty-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has its own basetemp below a common parent: share that parent.
    root = base if worker_id == "master" else base.parent
    (root / "shared").mkdir(exist_ok=True)
    return SharedArtifacts(root / "shared")


@pytest.fixture(scope="session")
def published_dir(request: pytest.FixtureRequest) -> Path | None:
    value = request.config.getoption("--published-dir")
    return Path(value) if value else None


@pytest.fixture
def golden(request: pytest.FixtureRequest, ndarrays_regression: object) -> Callable[..., None]:
    """``golden(name, array, atol=...)``: compare with fixtures/goldens/NAME.npz, updated by `tox -e regen`."""
    from fixtures.golden_files import GOLDENS, write_sidecar

    regenerating = request.config.getoption("force_regen") or request.config.getoption("regen_all")

    def check(name: str, array: object, *, atol: float) -> None:
        import numpy as np

        assert isinstance(array, np.ndarray)
        path = GOLDENS / f"{name}.npz"
        try:
            ndarrays_regression.check(  # type: ignore[attr-defined]
                {"logits": array}, fullpath=path, default_tolerance={"atol": atol, "rtol": 0.0}
            )
        finally:
            if regenerating:
                write_sidecar(path, array, atol)
        stored = np.load(path)["logits"]
        assert (stored.shape, stored.dtype) == (array.shape, array.dtype), (
            f"{path.name} holds {stored.shape} {stored.dtype}"
        )

    return check


@pytest.fixture(scope="session")
def ast_checkpoint(artifacts: SharedArtifacts) -> Callable[..., Path]:
    """``ast_checkpoint(variant, size="tiny"|"full")``: a synthetic original checkpoint, built once per run."""
    from fixtures.ast_checkpoints import FULL, TINY, write_checkpoint

    def get(variant: object, size: str = "tiny") -> Path:
        backbone = {"tiny": TINY, "full": FULL}[size]
        name = f"ast-{variant.name}-{size}.pth"  # type: ignore[attr-defined]
        return artifacts.get(name, lambda path: write_checkpoint(path, variant, backbone))  # type: ignore[arg-type]

    return get


@pytest.fixture
def hub_cache(tmp_path: Path) -> Callable[[str, str, bytes], Path]:
    """``hub_cache(repo_id, filename, content)``: a local Hugging Face cache (dataset repos) holding a file.

    Returns the cache directory, to pass as HF_HUB_CACHE; lets tests exercise the offline resolution.
    """
    cache = tmp_path / "hub-cache"
    revision = "0" * 40

    def add(repo_id: str, filename: str, content: bytes) -> Path:
        repo = cache / f"datasets--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / filename).write_bytes(content)
        return cache

    return add
