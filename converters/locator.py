"""Where a converted model leaves the original: the first stage, in forward order, whose value differs.

A stage pairs a module of the original model with the module of the converted model that should compute
the same value. Forward hooks on both read those values while each model runs its own ``forward``: no
stage recomputes either model's code. The locator reports the largest absolute difference of every stage
and names the first one past its tolerance; a mistake upstream shows in every later stage too, so the
first is where to look.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# (module, positional inputs, output) -> the value to compare
Reader = Callable[[nn.Module, tuple[Any, ...], Any], torch.Tensor]
# (module, positional inputs, keyword inputs, output) -> the value to compare
KeywordReader = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], torch.Tensor]


def output(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """A module's output; the first element of a tuple (attention modules return their weights too)."""
    return out[0] if isinstance(out, tuple) else out


def first_input(module: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
    """What a module was given: the value computed just before it, where no module returns it."""
    return args[0]


@dataclass(frozen=True)
class Tap:
    """One value read off one module while its model runs. ``keywords``: ``read`` is also given the module's
    keyword inputs, ``(module, args, kwargs, out)``: for a module that is handed its input by keyword."""

    module: nn.Module
    read: Reader | KeywordReader = output
    keywords: bool = False

    def hook(self, receive: Callable[[torch.Tensor], None]) -> Any:
        """A forward hook on the module that hands ``receive`` what the tap reads; its handle."""
        if self.keywords:
            read_all: Any = self.read
            return self.module.register_forward_hook(
                lambda module, args, kwargs, out: receive(read_all(module, args, kwargs, out)), with_kwargs=True
            )
        read: Any = self.read
        return self.module.register_forward_hook(lambda module, args, out: receive(read(module, args, out)))


@dataclass(frozen=True)
class Stage:
    """A value both models compute. ``tolerance`` fixes the allowed difference where the two differ by
    design (``note`` says how); otherwise it is ``atol + rtol * largest magnitude of the original's value``."""

    name: str
    original: Tap
    converted: Tap
    tolerance: float | None = None
    note: str = ""


@dataclass(frozen=True)
class StageDifference:
    stage: str
    difference: float
    tolerance: float
    note: str = ""

    @property
    def diverged(self) -> bool:
        return not self.difference <= self.tolerance  # NaN diverges


@dataclass(frozen=True)
class Divergence:
    """Every stage's largest difference, in forward order."""

    stages: tuple[StageDifference, ...]

    @property
    def first(self) -> StageDifference | None:
        return next((stage for stage in self.stages if stage.diverged), None)

    def worst(self) -> StageDifference:
        """The stage with the largest difference relative to its (positive) tolerance: the one a report quotes."""
        return max(self.stages, key=lambda stage: stage.difference / stage.tolerance)

    def summary(self) -> str:
        first = self.first
        if first is None:
            return f"no stage of {len(self.stages)} leaves the original"
        return (
            f"first divergence at {first.stage}: largest difference {first.difference:.3g} "
            f"(tolerance {first.tolerance:.3g})"
        )

    def table(self) -> str:
        """Every stage's difference beside its tolerance, the first divergence marked; notes (why a tolerance
        differs by design) numbered below, so that no row runs wide."""
        rows = [("stage", "largest difference", "tolerance", "")]
        first = self.first
        notes: list[str] = []
        for stage in self.stages:
            marks = ["<- first divergence"] if stage is first else []
            if stage.note:
                notes.append(stage.note)
                marks.append(f"[{len(notes)}]")
            rows.append((stage.stage, f"{stage.difference:.3g}", f"{stage.tolerance:.3g}", " ".join(marks)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]]).rstrip()
                 for row in rows]  # fmt: skip
        return "\n".join(lines + ([""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)] if notes else []))


class _Recorder:
    """Forward hooks that keep, per stage, what each side's tap read (the last call wins)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.values: dict[tuple[str, str], torch.Tensor] = {}
        self.handles = [
            tap.hook(self._keeping(stage.name, side))
            for stage in stages
            for side, tap in (("original", stage.original), ("converted", stage.converted))
        ]

    def _keeping(self, name: str, side: str) -> Callable[[torch.Tensor], None]:
        def keep(value: torch.Tensor) -> None:
            self.values[(name, side)] = value.detach()

        return keep

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def largest_difference(original: torch.Tensor, converted: torch.Tensor) -> float:
    """Largest absolute difference (in float64); infinite where the shapes differ."""
    if original.shape != converted.shape:
        return float("inf")
    if not original.numel():
        return 0.0
    return (original.double() - converted.double()).abs().max().item()


def _largest(tensor: torch.Tensor) -> float:
    return tensor.double().abs().max().item() if tensor.numel() else 0.0


@torch.no_grad()
def locate(stages: Sequence[Stage], run: Callable[[], object], *, atol: float, rtol: float = 0.0) -> Divergence:
    """Run both models once (``run`` does, in the order they need) and compare every stage.

    A stage one side never reached reads as an infinite difference: the models do not even share a path.
    """
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    recorder = _Recorder(stages)
    try:
        run()
    finally:
        recorder.remove()
    found = []
    for stage in stages:
        original = recorder.values.get((stage.name, "original"))
        converted = recorder.values.get((stage.name, "converted"))
        if original is None or converted is None:
            difference, scale = float("inf"), 0.0
        else:
            difference, scale = largest_difference(original, converted), _largest(original)
        tolerance = stage.tolerance if stage.tolerance is not None else atol + rtol * scale
        found.append(StageDifference(stage.name, difference, tolerance, stage.note))
    return Divergence(tuple(found))


class _Meeting:
    """Two models running in turn, meeting at each stage: a side runs until its next stage, leaves its value there
    and hands the turn over; the other runs to the same stage, the two values are compared and let go. So only one
    model computes at a time (its transient activations alone, as one after the other), and each side holds one
    stage's value at most."""

    SIDES = ("original", "converted")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.index = {stage.name: i for i, stage in enumerate(stages)}
        self.turn = "original"
        self.ended = dict.fromkeys(self.SIDES, False)
        self.waiting: dict[str, tuple[int, torch.Tensor]] = {}  # side -> (its stage index, its value)
        self.found: dict[str, tuple[float, float]] = {}  # stage -> (difference, the original's magnitude)
        self.condition = threading.Condition()

    def _other(self, side: str) -> str:
        return self.SIDES[1 - self.SIDES.index(side)]

    def wait_turn(self, side: str) -> None:
        with self.condition:
            while self.turn != side and not self.ended[self._other(side)]:
                self.condition.wait()

    def arrive(self, name: str, side: str, value: torch.Tensor) -> None:
        other, i = self._other(side), self.index[name]
        with self.condition:
            theirs = self.waiting.get(other)
            if theirs is not None and theirs[0] <= i:  # at this stage, or one this side never reached: let go
                del self.waiting[other]
                if theirs[0] == i:
                    original, converted = (value, theirs[1]) if side == "original" else (theirs[1], value)
                    self.found[name] = (largest_difference(original, converted), _largest(original))
                    return  # both values met: this side runs on, still its turn
            self.waiting[side] = (i, value)
            self.turn = other
            self.condition.notify_all()
        self.wait_turn(side)

    def end(self, side: str) -> None:
        with self.condition:
            self.ended[side] = True  # its value waiting, if any, stays to be met
            self.turn = self._other(side)
            self.condition.notify_all()


@torch.no_grad()
def locate_side_by_side(
    stages: Sequence[Stage], run_original: Callable[[], object], run_converted: Callable[[], object], *,
    atol: float, rtol: float = 0.0,
) -> Divergence:  # fmt: skip
    """``locate`` for two models that run independently: each on a thread of its own, in turn, meeting at every
    stage (``_Meeting``), so that only the stage being compared is held of each (a model's activations are never
    kept whole). Each stage's modules run once per forward pass (a second call of one is not compared)."""
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    meeting = _Meeting(stages)
    handles = []
    for stage in stages:
        for side, tap in (("original", stage.original), ("converted", stage.converted)):
            handles.append(tap.hook(_arriving(meeting, stage.name, side)))
    errors: list[BaseException] = []

    def running(name: str, run: Callable[[], object]) -> None:
        try:
            meeting.wait_turn(name)
            with torch.no_grad():
                run()
        except BaseException as error:  # raised again below, in the caller's thread
            errors.append(error)
        finally:
            meeting.end(name)

    threads = [threading.Thread(target=running, args=(name, run), name=f"locate-{name}")
               for name, run in (("original", run_original), ("converted", run_converted))]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for handle in handles:
            handle.remove()
    if errors:
        raise errors[0]
    found = []
    for stage in stages:
        difference, scale = meeting.found.get(stage.name, (float("inf"), 0.0))
        tolerance = stage.tolerance if stage.tolerance is not None else atol + rtol * scale
        found.append(StageDifference(stage.name, difference, tolerance, stage.note))
    return Divergence(tuple(found))


def _arriving(meeting: _Meeting, name: str, side: str) -> Callable[[torch.Tensor], None]:
    def arrive(value: torch.Tensor) -> None:
        meeting.arrive(name, side, value.detach())

    return arrive


@contextlib.contextmanager
def widened_in_turn(model: nn.Module, units: Sequence[nn.Module], dtype: torch.dtype) -> Iterator[nn.Module]:
    """``model`` computing in ``dtype`` without a copy of it in ``dtype``: each of ``units`` (its large submodules, the
    blocks of a transformer) is widened when it runs and narrowed back when it returns; the rest, for the whole
    block (a tensor two modules share, once). Tensors already as wide are left alone. Afterwards each holds its own
    tensor again, untouched: the computation is that of a copy of the model in ``dtype``, at one unit's cost."""
    # what was widened: its module, and its own tensor, put back as it was (no copy: memory-mapped weights stay so)
    narrow: dict[tuple[int, str, str], tuple[nn.Module, torch.Tensor]] = {}

    def tensors(module: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
        for m in module.modules():
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(m, kind).items():
                    if tensor is not None and tensor.is_floating_point() and tensor.itemsize < dtype.itemsize:
                        yield m, name, kind

    def widen(module: nn.Module, name: str, kind: str, shared: dict[int, torch.Tensor]) -> None:
        tensor = getattr(module, kind)[name]
        if id(tensor) in shared:
            if kind == "_parameters":  # the same Parameter, its data widened already: put back once
                return
            narrow[(id(module), name, kind)] = (module, tensor)
            getattr(module, kind)[name] = shared[id(tensor)]
            return
        own = tensor.data if kind == "_parameters" else tensor
        narrow[(id(module), name, kind)] = (module, own)
        shared[id(tensor)] = own.to(dtype)
        _put(module, name, kind, shared[id(tensor)])

    def back(keys: list[tuple[int, str, str]]) -> None:
        for key in keys:
            module, own = narrow.pop(key)
            _put(module, key[1], key[2], own)

    def unit_keys(unit: nn.Module) -> list[tuple[int, str, str]]:
        ids = {id(m) for m in unit.modules()}
        return [key for key in narrow if key[0] in ids]

    def entering(unit: nn.Module, args: Any) -> None:
        shared: dict[int, torch.Tensor] = {}
        for item in list(tensors(unit)):
            widen(*item, shared)

    def leaving(unit: nn.Module, args: Any, out: Any) -> None:
        back(unit_keys(unit))
        _give_back_freed_memory()
        _page_out(unit)

    inside = {id(m) for unit in units for m in unit.modules()}
    handles = []
    for unit in units:
        handles.append(unit.register_forward_pre_hook(entering))
        handles.append(unit.register_forward_hook(leaving))
    try:
        whole: dict[int, torch.Tensor] = {}
        for item in list(tensors(model)):
            if id(item[0]) not in inside:
                widen(*item, whole)
        yield model
    finally:
        for handle in handles:
            handle.remove()
        back(list(narrow))  # the rest, and a unit whose forward raised


def float64_in_turn(model: nn.Module, units: Sequence[nn.Module]) -> contextlib.AbstractContextManager[nn.Module]:
    """``model`` computing in float64, one unit widened at a time (``widened_in_turn``)."""
    return widened_in_turn(model, units, torch.float64)


def _give_back_freed_memory() -> None:
    """Return the heap's freed pages to the system (glibc's ``malloc_trim``): a unit's float64 copy is freed when it
    returns, but blocks under glibc's mmap threshold stay in the heap, where the next unit's do not always fit."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: nothing to do
        return None


MADV_PAGEOUT = 21  # Linux 5.4: reclaim these pages now; a file's are dropped (read again when touched), others kept


def _page_out(unit: nn.Module) -> None:
    """Let go of the pages of a unit's weights that are a file's (a checkpoint memory-mapped): each unit runs once,
    so a model held whole as it runs (the original, rebuilt on its mapped checkpoint) costs one unit at a time.
    Memory of the process's own is kept: the kernel can only swap it, and pages it out only where swap exists."""
    libc = _libc()
    if libc is None or not sys.platform.startswith("linux"):
        return
    page = 4096
    for tensor in [*unit.parameters(), *unit.buffers()]:
        start = tensor.data_ptr() // page * page
        end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
        if tensor.device.type == "cpu" and end > start:
            libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT)


def _put(module: nn.Module, name: str, kind: str, value: torch.Tensor) -> None:
    if kind == "_parameters":
        getattr(module, kind)[name].data = value
    else:
        getattr(module, kind)[name] = value
