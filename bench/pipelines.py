"""The pipelines the benchmark times, each run in a fresh process: ``python -m bench.pipelines NAME CASE OUT``.

``CASE`` is a case directory made by ``bench.cases`` (its ``case.json`` says the converter and its options).
- ``command``: the project's command end to end, every check on (the installed console script).
- ``verify``: the command's ``--verify`` of a directory the command wrote (made once, beside the case).
- ``locate``: a failing ``--verify``: of that directory with one weight in the middle of the model changed (made
  once), so that the comparison is located stage by stage (exit 1 is its success).
- ``seed``: the seed scripts' way: full ``torch.load``, rename, a randomly initialised model,
  ``load_state_dict``, one forward, ``save_pretrained``.
- ``core``: the project's conversion core alone: safe read, map, write; no checks.
- ``floor``: the I/O floor: a memory-mapped read of the checkpoint, a safetensors write of its tensors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cases import options_of
from converters import registry
from converters.contract import Role

if TYPE_CHECKING:
    import torch

# No torch at import: ``command`` and ``verify`` exec the console script, whose figures must not include a
# torch import of this process that the exec throws away.


def case_of(directory: Path) -> dict[str, Any]:
    """A built case: its converter's name (``format``) and options (input paths as Paths)."""
    name, options = options_of(directory)
    converter = registry.get(name)
    paths = {o.dest for o in converter.options if o.role in (Role.SOURCE, Role.INPUT, Role.OUTPUT)}
    options = {k: Path(v) if k in paths else v for k, v in options.items()}
    return {"format": name, "options": options, "directory": directory}


def arguments(case: dict[str, Any], output: Path | None) -> list[str]:
    """The command line that converts a case into ``output`` (None: the inputs alone, as ``--verify`` takes them)."""
    converter = registry.get(case["format"])
    argv = []
    for option in converter.options:
        value = output if option.role is Role.OUTPUT else case["options"].get(option.dest)
        if value is not None:
            argv += [option.flag, str(value)]
    return argv


def command(case: dict[str, Any], output: Path) -> None:
    execute(case, arguments(case, output))


def verify(case: dict[str, Any], output: Path) -> None:
    """``--verify`` of the directory the command writes for the case (``written`` in the case directory)."""
    execute(case, [*arguments(case, None), "--verify", str(written_directory(case))])


def written_directory(case: dict[str, Any]) -> Path:
    return Path(case["directory"]) / "written"


def locate(case: dict[str, Any], output: Path) -> None:
    """``--verify`` of the written directory with one weight changed: it fails and is located."""
    execute(case, [*arguments(case, None), "--verify", str(broken_directory(case))])


def broken_directory(case: dict[str, Any]) -> Path:
    """The written directory, the rows of its middle matrix (in key order) reversed; made once."""
    broken = Path(case["directory"]) / "broken"
    if broken.is_dir():
        return broken
    import shutil

    from safetensors.torch import load_file, save_file

    partial = broken.with_name("broken.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(written_directory(case), partial)
    weights = load_file(partial / "model.safetensors")
    matrices = sorted(key for key, tensor in weights.items() if tensor.dim() == 2 and tensor.shape[0] > 1)
    middle = matrices[len(matrices) // 2]
    weights[middle] = weights[middle].flip(0).contiguous()
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    partial.rename(broken)
    return broken


def execute(case: dict[str, Any], argv: list[str]) -> None:
    converter = registry.get(case["format"])
    script = str(Path(sys.executable).with_name(converter.command))
    # exec, not a child: the figures measured for this process are the command's own
    sys.stdout.flush()
    os.execv(script, [script, *argv])


def seed(case: dict[str, Any], output: Path) -> None:
    """The way the format was converted before this tool, without a check: its converter's example's ``unchecked``
    (the seed scripts' of ``../shared/seeds/``; transformers' own script's, for Whisper)."""
    import torch

    with torch.no_grad():
        unchecked_of(case["format"])(case["options"], output)  # type: ignore[misc]


def unchecked_of(name: str) -> Callable[[dict[str, Any], Path], None] | None:
    """A format's unchecked pipeline, or None where its example has none (the benchmark says so)."""
    return getattr(registry.get(name).examples(), "unchecked", None)


def core(case: dict[str, Any], output: Path) -> None:
    """Read, map and write through the converter's hooks, as the command's session calls them; no check."""
    from converters.safe_load import SafeLoader

    output.mkdir()
    converter = registry.get(case["format"])
    conversion = converter.conversion_class()(case["options"], output, converter, SafeLoader(remember=True))
    source = conversion.read()
    target = conversion.target(source)
    conversion.write(source, target, conversion.convert(source, target), output)


def floor(case: dict[str, Any], output: Path) -> None:
    """The I/O floor: a memory-mapped read of the source (and of a base model), one safetensors write."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from bench.cases import tensors_in

    output.mkdir()
    converter = registry.get(case["format"])
    tensors: dict[str, torch.Tensor] = {}
    for option in converter.options:
        value = case["options"].get(option.dest)
        if option.role is Role.SOURCE:
            # no allowlist: the floor is bare I/O, and the benchmark reads only the synthetic files it built
            state = torch.load(value, map_location="cpu", weights_only=False, mmap=True)
            tensors.update({f"source.{i}": tensor for i, tensor in enumerate(tensors_in(state))})
        elif option.role is Role.MODEL and value is not None:
            with safe_open(Path(value) / "model.safetensors", "pt") as base:
                tensors.update({key: base.get_tensor(key) for key in base.keys()})  # noqa: SIM118
    save_file({key: t.contiguous() for key, t in tensors.items()}, str(output / "model.safetensors"))


PIPELINES: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "command": command,
    "verify": verify,
    "locate": locate,
    "seed": seed,
    "core": core,
    "floor": floor,
}


def main() -> None:
    name, case_dir, output = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    PIPELINES[name](case_of(case_dir), output)


if __name__ == "__main__":
    main()
