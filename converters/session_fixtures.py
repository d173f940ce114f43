"""The check session's generic fixtures, the pipeline step by step: the conversion, the source (read once), the
target, the mapped tensors, the staged files, the reference, the written model loaded back, the comparison; and
``require``, which stops a fixture whose inputs a check refused. ``converters/session.py`` registers this module
as a plugin of every session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from converters.contract import Comparison, Conversion, Source, Target
from converters.errors import ConversionError
from converters.outcomes import PASSED, SKIPPED
from converters.output import flush_soon, os_error_of, write_fault
from converters.source_handle import SourceHandle
from converters.streamed import Staged, compared

if TYPE_CHECKING:
    from converters.session import ConversionPlugin

PLUGIN: pytest.StashKey[ConversionPlugin] = pytest.StashKey()  # the session's plugin, which the fixtures report to


class NotRun(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """Skips a check whose needed check did not pass (reported as ``not run``)."""

    def __init__(self, need: str) -> None:
        super().__init__(f"needs {need}")
        self.need = need


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
            raise NotRun(check)


@pytest.fixture(scope="session")
def prepared(
    request: pytest.FixtureRequest, conversion: Conversion, source: Source, target: Target, mapping: Any,
    converted: Any,
) -> Staged:  # fmt: skip
    """Converting: the files, written into the staging directory. Verifying: the directory's weights beside
    what the converter would write, nothing written. The checks keep digests."""
    from converters.hub_layout import digests

    require(request, WRITING)
    ties = mapping.tied_to(mapping.depths(source.tensors))
    tied = frozenset(ties)
    if conversion.verifying:
        expected = conversion.written(source, target, converted)
        held, differing = compared(conversion.staging, expected)
        return Staged(held, {}, tied, differing, ties)
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
    return Staged(held, {key: fresh.get(key, held[key]) for key in mapped}, tied, ties=ties)


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
    plugin = request.config.stash[PLUGIN]
    plugin.divergence = found.divergence  # for the report
    plugin.compared = dict(found.measured)  # for a golden record
    return found
