"""Install every registered converter's reference packages (``Converter.requires``, each ``Requirement.pip``), as
tox and CI do: a converter added to the registry has its reference installed without a line in tox.ini.

    python tools/references.py install              # each requirement's pip install commands, in order
    python tools/references.py install --only whisper
    python tools/references.py list                 # what would be installed
    python tools/references.py absent               # fails if any reference is importable (tox -e gate's proof)
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

from converters import registry


def commands(only: list[str] | None = None) -> list[list[str]]:
    """Each ``pip install`` to run: per converter (all, or ``only``), per requirement, its groups of arguments."""
    found = []
    for converter in registry.all_converters():
        if only and converter.name not in only:
            continue
        for requirement in converter.requires:
            if not requirement.pip:
                raise SystemExit(f"{converter.name}: requirement {requirement.module!r} says no pip arguments")
            found += [[sys.executable, "-m", "pip", "install", "--quiet", *group] for group in requirement.pip]
    return found


# what the references bring beside themselves (timm's torchvision, s3prl's torchaudio)
BROUGHT = ("torchvision", "torchaudio")


def importable() -> list[str]:
    """The reference modules (every converter's, and what they bring) that this environment can import."""
    modules = [r.module for c in registry.all_converters() for r in c.requires] + list(BROUGHT)
    return [module for module in modules if importlib.util.find_spec(module) is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "list", "absent"))
    parser.add_argument("--only", nargs="*", default=None, metavar="FORMAT")
    args = parser.parse_args(argv)
    if args.action == "absent":
        found = importable()
        if found:
            print(f"references: {', '.join(found)} can be imported here; this environment must have none")
        return 1 if found else 0
    for command in commands(args.only):
        print(" ".join(command[1:]))
        if args.action == "install":
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
