"""A conversion runs as a pytest session whose tests are its checks.

The harness hands a ``Conversion`` to the checks through this module, which is the session's plugin: it
provides the generic fixtures (the source, read once; the target; the mapped tensors; the staged files;
the reference; the written model loaded back; the comparison), orders the checks, skips a check whose
needed checks did not pass, and records each check's outcome with its one-line cause and the difference
it measured. A check fails on a refusal (``ConversionError``) or a difference (an assertion); any other
exception is an internal error: a bug in the tool or in a reference implementation, not the user's file.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from converters.contract import Comparison, Conversion, Source, Target
from converters.errors import ConversionError
from converters.output import flush_soon, os_error_of, write_fault

PASSED, FAILED, SKIPPED, NOT_RUN, INTERNAL = "passed", "failed", "skipped", "not run", "internal error"


@dataclass
class Outcome:
    check: str
    result: str  # passed, failed, skipped, not run, internal error
    cause: str = ""  # failed: why; skipped: the reason; not run: the check it needs; internal error: the error
    difference: float | None = None
    tolerance: float | None = None
    details: str = ""  # a failure's whole text beyond its cause line (a locator's table); a bug's traceback


@dataclass
class SessionResult:
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the checks say beside their results
    divergence: Any = None  # the locator's stages, where the comparison located them
    settings: list[Any] = field(default_factory=list)  # JSON fields that differ from the original's (a fix)
    output: str = ""  # pytest's own report of the session (shown with --verbose; kept for a bug's log)

    @property
    def internal(self) -> Outcome | None:
        """The first internal error: the session could not judge the conversion."""
        return next((o for o in self.outcomes if o.result == INTERNAL), None)

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and any(o.result == PASSED for o in self.outcomes)
            and all(o.result in (PASSED, SKIPPED) for o in self.outcomes)
        )

    @property
    def failure(self) -> Outcome | None:
        """The first check that failed or broke: the one the result line names."""
        return next((o for o in self.outcomes if o.result in (FAILED, INTERNAL)), None)

    @property
    def cause(self) -> str:
        """The first failing check's one-line cause, or why the session did not pass."""
        failure = self.failure
        if failure is not None:
            return f"check {failure.check} failed: {failure.cause}"
        return f"the check session ended with pytest exit code {self.exit_code}"

    def rows(self) -> list[Any]:
        from converters.report import Row

        return [Row(o.check, o.result, o.cause, o.difference, o.tolerance) for o in self.outcomes]

    def table(self) -> str:
        """The checks, each cause said once: the first failure's is the result line's, the others numbered."""
        from converters.report import checks_table

        failure = self.failure
        return checks_table(self.rows(), said_below=failure.check if failure is not None else None)


def _one_line(longrepr: Any) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(longrepr, tuple):  # skips: (file, line, reason)
        text = str(longrepr[-1]).removeprefix("Skipped: ")
    else:  # a collection error: pytest's report, its cause on the last line after an "E" marker
        text = "\n".join(line.removeprefix("E ") for line in str(longrepr).splitlines())
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if crash is not None and lines:
        cause = next((line for line in lines if not line.endswith(":")), lines[-1])
        # a check's own failure says what differs; its exception type adds nothing to read
        return cause.removeprefix("Failed: ").removeprefix("AssertionError: ")
    return lines[-1] if lines else ""


PLUGIN = pytest.StashKey["ConversionPlugin"]()


class SourceHandle:
    """The source, read once and held until released: the checkpoint is mapped once per session, and its
    pages are let go before the written model is loaded back.

    The session's fixtures keep what they returned, so releasing empties those mappings in place (the source's
    tensors, the mapped views of them): the last references go, and the file is unmapped then and there.
    """

    def __init__(self, read: Callable[[], Source]) -> None:
        self._read = read
        self._source: Source | None = None
        self._held: list[dict[str, Any]] = []

    def get(self) -> Source:
        if self._source is None:
            self._source = self._read()
            self._held.append(self._source.tensors)
        return self._source

    def hold(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """``tensors`` (views of the source) are emptied when the source is released."""
        self._held.append(tensors)
        return tensors

    def release(self) -> None:
        for tensors in self._held:
            tensors.clear()
        self._held.clear()
        self._source = None


@dataclass(frozen=True)
class Staged:
    """What the checks keep of the weights files (written, or verified): digests, not tensors, so nothing holds
    the source's memory."""

    written: dict[str, Any]  # serialized key -> digest of what the files hold
    mapped: dict[str, Any]  # mapped key -> digest of the mapped tensor in the dtype it was written in
    tied: frozenset[str]  # targets transformers ties to another (written once)
    differing: tuple[str, ...] = ()  # verifying: each tensor that is not what the converter would write, why


# A verification reads the directory's tensors a batch at a time, each batch through a mapping of its own that
# is closed before the next: pages of a file stay resident while it is mapped, so one mapping for the whole
# directory would hold a second copy of the model beside what the converter would write.
BATCH_BYTES = 128 * 2**20
_ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2}


def compared(directory: Path, expected: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Digests of every tensor of a directory's safetensors files, and each that differs from ``expected``
    (in the expected order), holding about ``BATCH_BYTES`` of the directory at a time."""
    from safetensors import safe_open

    held: dict[str, Any] = {}
    described: dict[str, str] = {}
    if not any(directory.glob("*.safetensors")):  # a directory of PyTorch pickles (pytorch_model.bin, or its shards)
        return _compare_pickled(directory, expected, described)
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, "pt") as weights:
            sizes = {}
            for key in weights.keys():  # noqa: SIM118 - safe_open is no mapping
                part = weights.get_slice(key)
                sizes[key] = math.prod(part.get_shape()) * _ITEM_BYTES.get(part.get_dtype(), 1)
        batches: list[list[str]] = [[]]
        total = 0
        for key, size in sizes.items():
            if batches[-1] and total + size > BATCH_BYTES:
                batches.append([])
                total = 0
            batches[-1].append(key)
            total += size
        for batch in batches:
            held.update(_compare_batch(path, batch, expected, described))
    return held, tuple(described[key] for key in expected if key in described)


def _compare_pickled(
    directory: Path, expected: dict[str, Any], described: dict[str, str]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``compared`` for ``pytorch_model*.bin`` files: each read safely (weights only, archive checked), whole."""
    from converters.hub_layout import digests
    from converters.safe_load import SafeLoader, as_state_dict

    held: dict[str, Any] = {}
    loader = SafeLoader()
    for path in sorted(directory.glob("pytorch_model*.bin")):
        found = as_state_dict(loader.load(path), str(path))
        for key, theirs in found.items():
            if key in expected and (why := difference(key, theirs, expected[key])) is not None:
                described[key] = why
        held.update(digests(found))
        found.clear()
    return held, tuple(described[key] for key in expected if key in described)


def _compare_batch(path: Path, keys: list[str], expected: dict[str, Any], described: dict[str, str]) -> dict[str, Any]:
    """The digests of ``keys`` in ``path``; each that differs from ``expected`` described. The batch's mapping
    closes when its tensors go, on return."""
    from safetensors import safe_open

    from converters.hub_layout import digests

    with safe_open(path, "pt") as weights:
        found = {key: weights.get_tensor(key) for key in keys}
    for key, theirs in found.items():
        if key in expected and (why := difference(key, theirs, expected[key])) is not None:
            described[key] = why
    return digests(found)


def difference(key: str, theirs: Any, tensor: Any) -> str | None:
    """How a directory's tensor differs from what the converter writes: dtype, shape, or its largest difference."""
    if theirs.dtype != tensor.dtype or theirs.shape != tensor.shape:
        return (
            f"{key} is {theirs.dtype} {tuple(theirs.shape)}, the converter writes {tensor.dtype} {tuple(tensor.shape)}"
        )
    if not theirs.equal(tensor):
        largest = (theirs.double() - tensor.double()).abs().max().item()
        return f"{key} differs from what the converter writes by {largest:.3g} (largest difference)"
    return None


# -- fixtures: the generic pipeline, step by step -----------------------------------------------------------------


@pytest.fixture(scope="session")
def conversion(request: pytest.FixtureRequest) -> Conversion:
    """The conversion being checked: its options and its converter's hooks."""
    return request.config.stash[PLUGIN].conversion


@pytest.fixture(scope="session")
def notes(request: pytest.FixtureRequest) -> list[str]:
    """Lines a check adds to the report under the table (where a derived value came from, say)."""
    notes: list[str] = request.config.stash[PLUGIN].notes
    return notes


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[[float, float], None]:
    """``measure(difference, tolerance)`` records a check's largest difference for the report."""
    measured = request.config.stash[PLUGIN].measured

    def record(difference: float, tolerance: float) -> None:
        measured[request.node.name] = (float(difference), float(tolerance))
        request.node.user_properties += [("largest_difference", f"{difference:.6g}"), ("tolerance", f"{tolerance:g}")]

    return record


@pytest.fixture(scope="session")
def source_handle(conversion: Conversion) -> Iterator[SourceHandle]:
    handle = SourceHandle(conversion.read)
    yield handle
    handle.release()


@pytest.fixture(scope="session")
def source(source_handle: SourceHandle) -> Source:
    """The source, loaded safely (weights only, archive checked), memory-mapped."""
    return source_handle.get()


class Concurrent:
    """A conversion's reference computed on a thread of its own (``Conversion.concurrent_reference``): started
    once the target is known, awaited where a check needs it, waited for when the session ends (it holds
    tensors of the source)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference")
        self._future = self._executor.submit(work)

    def result(self) -> Any:
        """What the work returned; what it raised is raised here, with its traceback."""
        return self._future.result()

    def finish(self) -> None:
        """Waits for the work, then lets go of what it returned or raised (a model on the source's tensors, a
        traceback whose frames hold them): the source is unmapped when the session releases it."""
        self._executor.shutdown(wait=True)
        del self._future


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, conversion: Conversion, source: Source) -> Iterator[Target]:
    found = conversion.target(source)
    plugin = request.config.stash[PLUGIN]
    if conversion.concurrent_reference:
        plugin.concurrent = Concurrent(lambda: conversion.reference(source, found))
    yield found
    if plugin.concurrent is not None:
        plugin.concurrent.finish()
        plugin.concurrent = None


@pytest.fixture(scope="session")
def mapping(conversion: Conversion, source: Source, target: Target) -> Any:
    return conversion.mapping(source, target)


@pytest.fixture(scope="session")
def expected_source(conversion: Conversion, source: Source, target: Target) -> dict[str, Any]:
    return conversion.expected_source(source, target)


@pytest.fixture(scope="session")
def converted(
    conversion: Conversion, source_handle: SourceHandle, source: Source, target: Target, expected_source: dict[str, Any]
) -> Any:
    """The mapped tensors: every source key used by exactly one rule, every key the target needs present."""
    missing = [key for key in expected_source if key not in source.tensors]
    tensors = conversion.convert(source, target)  # names the first unexpected key
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(f"missing key {missing[0]!r} in {conversion.where}{more}")
    return source_handle.hold(tensors)


# The stages of a session, by check order: nothing is written from a source a check before WRITING refused,
# and the written files are not loaded back while a check of them before RELOADING failed.
WRITING, RELOADING = 50, 70


def require(request: pytest.FixtureRequest, stage: int) -> None:
    """Stop a fixture whose inputs a check refused: every check that needs it is ``not run (needs ...)``."""
    plugin = request.config.stash[PLUGIN]
    for check, outcome in plugin.outcomes.items():
        if plugin.order.get(check, stage) < stage and outcome.result not in (PASSED, SKIPPED):
            raise _NotRun(check)


@pytest.fixture(scope="session")
def prepared(
    request: pytest.FixtureRequest, conversion: Conversion, source: Source, target: Target, mapping: Any,
    converted: Any,
) -> Staged:  # fmt: skip
    """Converting: the files, written into the staging directory. Verifying: the directory's weights beside
    what the converter would write, nothing written. The checks keep digests."""
    from converters.hub_layout import digests

    require(request, WRITING)
    tied = frozenset(mapping.tied_keys(mapping.depths(source.tensors)))
    if conversion.verifying:
        expected = conversion.written(source, target, converted)
        held, differing = compared(conversion.staging, expected)
        return Staged(held, {}, tied, differing)
    try:
        written = conversion.write(source, target, converted, conversion.staging)
    except Exception as error:  # a full disk, an unwritable directory: the cause, not a traceback
        fault = os_error_of(error)
        if fault is None:
            raise
        raise write_fault(fault, "writing into", conversion.staging, newest=True) from None
    request.config.stash[PLUGIN].flushing.append(flush_soon(conversion.staging))
    held = digests(written)
    # a tensor written as mapped (the same object) has the digest just taken
    mapped = {key: tensor.to(written[key].dtype) for key, tensor in converted.items() if key in written}
    fresh = digests({key: tensor for key, tensor in mapped.items() if tensor is not written[key]})
    return Staged(held, {key: fresh.get(key, held[key]) for key in mapped}, tied)


@pytest.fixture(scope="session")
def reference(
    request: pytest.FixtureRequest, conversion: Conversion, source: Source, target: Target, prepared: Staged
) -> Any:
    """The original implementation's side, prepared while the source is held: after the files are written, or
    (``concurrent_reference``) while they were written."""
    concurrent = request.config.stash[PLUGIN].concurrent
    return concurrent.result() if concurrent is not None else conversion.reference(source, target)


@pytest.fixture(scope="session")
def reloaded(
    request: pytest.FixtureRequest, source_handle: SourceHandle, conversion: Conversion, target: Target,
    prepared: Staged, reference: Any,
) -> Iterator[tuple[Any, dict[str, Any]]]:  # fmt: skip
    """The written model loaded back with transformers, as written (``dtype="auto"``; 4.x would widen half
    precision to float32), once the source is let go."""
    from converters.hub_layout import empty

    require(request, RELOADING)
    source_handle.release()
    loaded: Any = target.model_class.from_pretrained(conversion.staging, dtype="auto", output_loading_info=True)
    model, info = loaded
    yield model.eval(), info
    empty(model)  # the written files unmapped now, not when a reference cycle in the model is collected


@pytest.fixture(scope="session")
def comparison(
    request: pytest.FixtureRequest, conversion: Conversion, target: Target, reloaded: tuple[Any, Any], reference: Any
) -> Comparison:
    found = conversion.compare(reloaded[0], reference, target)
    request.config.stash[PLUGIN].divergence = found.divergence  # for the report
    return found


# -- the plugin -----------------------------------------------------------------------------------------------------


def check_order(item: pytest.Item) -> float:
    marker = item.get_closest_marker("check")
    return float(marker.kwargs.get("order", 50)) if marker else 50.0


def check_mode(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("check")
    return marker.kwargs.get("mode") if marker else None


class ConversionPlugin:
    """Carries a conversion into its checks, orders them, and records what they found."""

    def __init__(self, conversion: Any, progress: Callable[[str], None] | None = None) -> None:
        self.conversion = conversion
        self.progress = progress  # told each check's name as it starts, and "" at the end
        self.divergence: Any = None
        self.outcomes: dict[str, Outcome] = {}
        self.measured: dict[str, tuple[float, float]] = {}
        self.notes: list[str] = []
        self.settings: list[Any] = []  # verifying: the JSON fields that differ from what the original computes with
        self.order: dict[str, float] = {}  # each check's place (the check marker's order)
        self.concurrent: Concurrent | None = None  # the reference, where it is computed alongside the checks
        self.flushing: list[Any] = []  # threads writing the staged files back to disk, joined at the end
        self._first_to_raise: dict[int, tuple[str, BaseException]] = {}  # a failed fixture: the check it failed

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[PLUGIN] = self
        config.addinivalue_line("markers", "check(order, needs): a check's place, and the checks it needs passed")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # a check of one mode only (converting: what was written; verifying: what a directory holds)
        mode = "verify" if getattr(self.conversion, "verifying", False) else "convert"
        items[:] = [item for item in items if check_mode(item) in (None, mode)]
        items.sort(key=check_order)  # stable: definition order within an order number
        self.order = {item.name: check_order(item) for item in items}

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.progress is not None:
            done = len(self.outcomes)
            self.progress(f"checking {done + 1}/{len(self.order)}: {nodeid.split('::')[-1]}")

    def pytest_sessionfinish(self) -> None:
        for thread in self.flushing:
            thread.join()
        if self.progress is not None:
            self.progress("")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("check")
        for need in marker.kwargs.get("needs", ()) if marker else ():
            found = self.outcomes.get(need)
            if found is not None and found.result not in (PASSED, SKIPPED):
                raise _NotRun(need)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        if excinfo is None:
            return report
        # The report holds the traceback as text now. Its frames' locals (views of the source, a model) would
        # stay alive in a reference cycle through pytest's cached fixture error, the file mapped, until a
        # garbage collection; a run of many conversions in one process (the manifest plugin) would pile them up.
        traceback.clear_frames(excinfo.tb)
        error = excinfo.value
        name = item.name
        if isinstance(error, _NotRun):
            report.user_properties.append(("not_run", error.need))
        elif report.when == "setup" and not excinfo.errisinstance(pytest.skip.Exception):
            first = self._first_to_raise.setdefault(id(error), (name, error))[0]
            if first != name:  # the fixture failed already, for the check that needed it first: not run, as JUnit says
                report.user_properties.append(("not_run", first))
                report.outcome = "skipped"
                report.longrepr = (str(item.path), 0, f"not run: needs {first}")
                return report
        if excinfo.errisinstance(ConversionError):  # a refusal: its cause, not a traceback
            report.longrepr = str(error)
        kind = _kind(excinfo)
        report.user_properties.append(("kind", kind))
        if kind == FAILED:
            report.user_properties.append(("message", str(getattr(error, "msg", error))))
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # the checks module itself could not be imported (a missing dependency, say)
            name = f"collecting {Path(report.nodeid).name}"
            self.outcomes[name] = Outcome(name, INTERNAL, _one_line(report.longrepr), details=str(report.longrepr))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::")[-1]
        if report.passed and report.when != "call":
            return
        if name in self.outcomes and self.outcomes[name].result != PASSED:
            return  # keep the first problem (a teardown error after a failure adds nothing)
        properties = dict(report.user_properties)
        if "not_run" in properties:
            outcome = Outcome(name, NOT_RUN, f"needs {properties['not_run']}")
        elif report.passed:
            outcome = Outcome(name, PASSED)
        elif report.skipped:
            outcome = Outcome(name, SKIPPED, _one_line(report.longrepr))
        else:
            kind = str(properties.get("kind", FAILED))
            cause = _one_line(report.longrepr)
            message = str(properties.get("message", ""))
            beyond = message.split("\n", 1)[1].strip("\n") if "\n" in message else ""
            outcome = Outcome(name, kind, cause, details=str(report.longrepr) if kind == INTERNAL else beyond)
        if name in self.measured:
            outcome.difference, outcome.tolerance = self.measured[name]
        self.outcomes[name] = outcome


class _NotRun(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """Skips a check whose needed check did not pass (reported as ``not run``)."""

    def __init__(self, need: str) -> None:
        super().__init__(f"needs {need}")
        self.need = need


def _kind(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """A refusal or a measured difference fails the check; anything else is a bug, ours or a reference's."""
    if excinfo.errisinstance((ConversionError, AssertionError, pytest.fail.Exception)):
        return FAILED
    if excinfo.errisinstance(pytest.skip.Exception):
        return SKIPPED
    return INTERNAL


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off (the report says what matters), restored afterwards."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        (logging.enable_progress_bar if bars else logging.disable_progress_bar)()


GENERIC_CHECKS = Path(__file__).with_name("checks.py")


def check_names(modules: Sequence[Path], mode: str) -> list[str]:
    """The checks a session of ``mode`` runs, in its order, read off the modules (imported, not run)."""
    import importlib.util

    found: list[tuple[float, int, str]] = []
    for index, path in enumerate(modules):
        spec = importlib.util.spec_from_file_location(f"_listed_checks_{index}_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, function in vars(module).items():
            if not name.startswith("test_") or not callable(function):
                continue
            marks = [m for m in getattr(function, "pytestmark", []) if m.name == "check"]
            kwargs = marks[0].kwargs if marks else {}
            if kwargs.get("mode") in (None, mode):
                found.append((float(kwargs.get("order", 50)), len(found), name))
    return [name for _, _, name in sorted(found)]


def run_checks(
    checks: Sequence[Path] | Path,
    conversion: object,
    *,
    junitxml: Path | None = None,
    suite: str = "conversion",
    ignore_warnings: Sequence[str] = (),
    verbose: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SessionResult:
    """Run the checks in ``checks`` (test modules) against ``conversion`` in a pytest session of its own.

    ``junitxml``: also write the results there (each check a test case, its measured difference and
    tolerance as properties), as the suite ``suite``. ``verbose``: pytest's own report on stdout (else kept in
    the result's ``output``); ``progress``: told each check's name as it starts.

    The session ignores the caller's pytest configuration (ini files, conftest.py, PYTEST_ADDOPTS): the
    checks must be the same wherever the command runs.
    """
    modules = [checks] if isinstance(checks, Path) else list(checks)
    plugin = ConversionPlugin(conversion, progress)
    root = Path(os.path.commonpath([str(m.parent.absolute()) for m in modules]))
    args = [
        *map(str, modules),
        "-c",
        os.devnull,
        "--rootdir",
        str(root),
        "--confcutdir",
        str(root),
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-p",
        "no:randomly",
        "-p",
        "no:debugging",  # no pdb: a conversion is not debugged through its checks, and pdb's import costs
        "-p",
        "no:unraisableexception",  # its teardown runs the garbage collector over the models several times
        # plugins the checks have no use for, each paid for on every check (logging's handlers most)
        "-p",
        "no:logging",
        "-p",
        "no:doctest",
        "-p",
        "no:stepwise",
        "-p",
        "no:pastebin",
        "--import-mode=importlib",
        "-v",
        "-rsfE",
        "--tb=native",  # a bug's whole traceback, for its log
        "--no-header",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
    for warning in ignore_warnings:
        args += ["-W", warning]
    if junitxml is not None:
        args += [f"--junitxml={junitxml.absolute()}", "-o", f"junit_suite_name={suite}"]
    # The environment as it was comes back afterwards (patch.dict restores every key it saw changed).
    # Plugins installed beside the command (anyio, hypothesis, ...) have no place in its checks.
    shown = io.StringIO()
    with quiet_transformers(), mock.patch.dict(os.environ, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        os.environ.pop("PYTEST_ADDOPTS", None)
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(shown):
            exit_code = pytest.main(args, plugins=[plugin, sys.modules[__name__]])
    result = SessionResult(int(exit_code), list(plugin.outcomes.values()), plugin.notes, plugin.divergence)
    result.settings = plugin.settings
    result.output = shown.getvalue()
    return result
