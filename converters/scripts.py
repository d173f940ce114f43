"""Each registered converter's console script, by its name: ``convert-<name>-checkpoint = converters.scripts:<name>``.

``setup.py`` lists them from ``converters/registry.py``, so that a converter added to the registry has its command
without another line anywhere. A script runs the command on ``sys.argv`` and ends the process with its exit code
(``converters.cli.exit_now``).
"""

from __future__ import annotations

from collections.abc import Callable


def __getattr__(name: str) -> Callable[[], None]:
    from converters import registry

    if name not in registry.names():
        raise AttributeError(f"module 'converters.scripts' has no attribute {name!r}: no converter of that name")

    def script() -> None:
        from converters.cli import exit_now, run

        exit_now(run(registry.get(name)))

    return script
