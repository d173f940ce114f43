"""Which s3prl provides the reference heads, found without importing it.

s3prl 0.4.18 and ESPnet's fork ``espnet-s3prl`` install the same ``s3prl`` package; either is accepted, and
the report says which one ran. Only the checks import it: ``--help``, argument errors and the conversion
core work without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from converters.errors import ConversionError

INSTALL = (
    "pip install --no-deps s3prl==0.4.18 (or ESPnet's fork: pip install --no-deps espnet-s3prl); --no-deps because "
    "s3prl declares torchaudio, which would pull in another build of torch, and its heads need only torch and numpy"
)


def installed() -> str | None:
    """``"<distribution> <version>"`` of the installed ``s3prl`` package, or None if there is none."""
    try:
        if importlib.util.find_spec("s3prl") is None:
            return None
    except (ImportError, ValueError):  # a module entry of None, as a blocked import leaves it
        return None
    for name in importlib.metadata.packages_distributions().get("s3prl", []):
        return f"{name} {importlib.metadata.version(name)}"
    return "s3prl (from no installed distribution)"  # on sys.path as a plain directory


def require() -> str:
    """The installed reference, or a refusal that says how to install it."""
    found = installed()
    if found is None:
        raise ConversionError(f"s3prl is not installed; its head modules are the reference. Install it: {INSTALL}")
    return found
