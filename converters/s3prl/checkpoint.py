"""Reading an s3prl runner checkpoint (s3prl/downstream/runner.py) safely, and what it says about training.

The runner saves ``Downstream``, ``Featurizer``, ``Optimizer``, ``Step``, ``Epoch``, ``Args`` (an
``argparse.Namespace``), ``Config`` and sometimes ``Upstream`` or ``Scheduler``. A weights-only load
refuses ``argparse.Namespace``; it is mapped to an inert stand-in that only holds attributes. Nothing
else is allowed: omegaconf or other objects would run their own code and are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from converters.errors import ConversionError
from converters.safe_load import SafeLoader, as_state_dict


class NamespaceStandIn:
    """What ``argparse.Namespace`` unpickles to here: a bag of attributes, no behaviour (the unpickler
    sets its ``__dict__``; nothing of it is called)."""


SAFE_GLOBALS = [(NamespaceStandIn, "argparse.Namespace")]


@dataclass
class S3PRLCheckpoint:
    path: Path
    downstream: dict[str, torch.Tensor]
    featurizer: dict[str, torch.Tensor]
    args: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the runner's Config (its yaml, as a dict)
    entries: tuple[str, ...] = ()

    def flattened(self) -> dict[str, torch.Tensor]:
        """Source tensors under the names the mapping rules use: ``Downstream.<key>``, ``Featurizer.<key>``."""
        return {
            **{f"Downstream.{k}": v for k, v in self.downstream.items()},
            **{f"Featurizer.{k}": v for k, v in self.featurizer.items()},
        }


def read(path: Path, loader: SafeLoader | None = None) -> S3PRLCheckpoint:
    """Load with ``weights_only=True`` and the Namespace stand-in (through ``loader``, a fresh one by default);
    check the runner's layout."""
    loaded = (loader or SafeLoader()).load(path, safe_globals=SAFE_GLOBALS)
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, expected an s3prl runner checkpoint (a dict)")
    for entry in ("Downstream", "Featurizer"):
        if entry not in loaded:
            raise ConversionError(
                f"{path} has no {entry!r} entry (entries: {', '.join(map(str, loaded))}); is it an s3prl "
                f"downstream checkpoint?"
            )
    args = loaded.get("Args")
    if args is not None and not isinstance(args, NamespaceStandIn | Mapping):
        raise ConversionError(f"{path}: 'Args' is a {type(args).__name__}, expected an argparse.Namespace")
    config = loaded.get("Config")
    if config is not None and not isinstance(config, Mapping):
        raise ConversionError(f"{path}: 'Config' is a {type(config).__name__}, expected the runner's config dict")
    return S3PRLCheckpoint(
        path=Path(path),
        downstream=as_state_dict(loaded["Downstream"], f"{path} entry 'Downstream'"),
        featurizer=as_state_dict(loaded["Featurizer"], f"{path} entry 'Featurizer'"),
        args=dict(vars(args) if isinstance(args, NamespaceStandIn) else (args or {})),
        config=dict(config or {}),
        entries=tuple(str(k) for k in loaded),
    )
