"""Where a pipeline's time goes: ``python -m bench.profile CASE_DIR [--pipelines command seed]``.

Runs each pipeline once in a fresh process under cProfile and prints the seconds spent in each phase of
its work: the functions below, counted where they are first entered (a call made by another listed
function is inside that one's time). "everything else" is the rest of the run: imports, pytest's
start-up and reporting, Python between the phases. cProfile slows Python-heavy phases (imports,
pytest) more than torch's kernels: compare the columns with each other, and take real wall times from
``bench.run``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent

# Per format and pipeline: phase -> the functions (module:qualified name) whose calls make it up.
PHASES: dict[tuple[str, str], dict[str, list[str]]] = {
    ("ast", "command"): {
        "read the checkpoint (mmap, CRCs), every check": ["converters.safe_load:SafeLoader.load"],
        "map and split": ["converters.contract:Conversion.convert"],
        "write safetensors": ["converters.ast.convert:write_files"],
        "digests (written and reloaded)": ["converters.hub_layout:digests"],
        "build the original (timm)": ["converters.ast.original:load_original"],
        "original's forward": ["converters.ast.original:OriginalAST.forward"],
        "reload (from_pretrained)": ["transformers:PreTrainedModel.from_pretrained"],
        "converted model's forward": ["transformers:ASTForAudioClassification.forward"],
        "publish (fsync, rename)": ["converters.output:publish"],
    },
    ("ast", "seed"): {
        "torch.load (full)": ["torch:load"],
        "random init": ["transformers:ASTForAudioClassification.__init__"],
        "load_state_dict": ["converters.hub_layout:load_serialized"],
        "forward": ["transformers:ASTForAudioClassification.forward"],
        "save_pretrained": ["transformers:PreTrainedModel.save_pretrained"],
    },
    ("s3prl", "command"): {
        "read the checkpoint (CRCs, weights_only)": ["converters.s3prl.checkpoint:read"],
        "map the head": ["converters.contract:Conversion.convert"],
        "build the model from the base (from_pretrained)": ["converters.s3prl.convert:build_model"],
        "save_pretrained": ["transformers:PreTrainedModel.save_pretrained"],
        "digests (written and reloaded)": ["converters.hub_layout:digests"],
        "reload (from_pretrained)": ["transformers:PreTrainedModel.from_pretrained"],
        "converted model's forward": ["transformers:Wav2Vec2ForXVector.forward"],
        "s3prl's head": ["converters.s3prl.original:SpeakerVerificationExpert.forward"],
        "publish (fsync, rename)": ["converters.output:publish"],
    },
    ("s3prl", "seed"): {
        "torch.load (full)": ["torch:load"],
        "base model (from_pretrained)": ["transformers:PreTrainedModel.from_pretrained"],
        "forward": ["transformers:Wav2Vec2ForXVector.forward"],
        "save_pretrained": ["transformers:PreTrainedModel.save_pretrained"],
    },
}

COMMAND_SCRIPT = """
import sys
from pathlib import Path

from bench.pipelines import arguments, case_of
from converters import registry
from converters.cli import run

case = case_of(Path({case!r}))
sys.exit(run(registry.get(case["format"]), arguments(case, Path({output!r}))))
"""

Key = tuple[str, int, str]  # pstats' (file, first line, function name)


def code_key(dotted: str) -> Key:
    """The pstats key of a function named ``module:Qualified.name`` (decorators unwrapped)."""
    module, _, qualified = dotted.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualified.split("."):
        target = getattr(target, part)
    function = inspect.unwrap(getattr(target, "__func__", target))
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def phase_seconds(stats: pstats.Stats, phases: dict[str, list[str]]) -> dict[str, float]:
    keys = {phase: {code_key(name) for name in names} for phase, names in phases.items()}
    listed = set().union(*keys.values())
    table: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    seconds = {}
    for phase, wanted in keys.items():
        # time of the calls made from outside every listed function: nested ones are in their caller's phase
        seconds[phase] = sum(
            timing[3]
            for key in wanted
            if key in table
            for caller, timing in table[key][4].items()
            if caller not in listed
        )
    return seconds


def profile(pipeline: str, case_dir: Path, scratch: Path) -> pstats.Stats:
    path = scratch / f"{pipeline}.prof"
    output = scratch / f"out-{pipeline}"
    if pipeline == "command":
        # the command's main in the profiled interpreter (bench.pipelines execs the console script instead)
        script = scratch / "command.py"
        script.write_text(COMMAND_SCRIPT.format(case=str(case_dir), output=str(output)))
        command = [sys.executable, "-m", "cProfile", "-o", str(path), str(script)]
    else:
        command = [sys.executable, "-m", "cProfile", "-o", str(path), "-m", "bench.pipelines", pipeline]
        command += [str(case_dir), str(output)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=environment)
    return pstats.Stats(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path, help="a case directory made by bench.cases (bench/run.py builds them)")
    parser.add_argument("--pipelines", nargs="*", default=["command", "seed"])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.pipelines import case_of

    kind = case_of(args.case)["format"]
    with tempfile.TemporaryDirectory() as scratch:
        for pipeline in args.pipelines:
            stats = profile(pipeline, args.case.absolute(), Path(scratch))
            total = stats.total_tt  # type: ignore[attr-defined]
            seconds = phase_seconds(stats, PHASES[(kind, pipeline)])
            print(f"\n{args.case.name}, {pipeline}: {total:.2f} s under cProfile\n")
            print("| phase | seconds | share |\n|---|---:|---:|")
            for phase, value in [*seconds.items(), ("everything else", total - sum(seconds.values()))]:
                print(f"| {phase} | {value:.2f} | {value / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
