"""The contract between the generic harness and each converter.

A converter is one ``Converter`` record in the registry (``converters/registry.py``): its command and
options, the ``Conversion`` class that holds one run's inputs, the checks of its own, the files it writes
and the packages its reference implementation needs. The generic checks (``converters/checks.py``: safe
load, finite weights, key coverage, shapes, every target key written, reload exactly, equivalence with the
original through the divergence locator) call the hooks of ``Conversion``; a converter's own checks module
holds only what is specific to its format. The harness runs them all in one pytest session, stages the
output and publishes it only when every check passed.

Importing this module is cheap (no torch): a command's ``--help`` and argument errors need nothing more.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from converters.fetch import Fetcher
    from converters.golden import Recorded
    from converters.locator import Divergence, Tap
    from converters.mapping import KeyMapping
    from converters.safe_load import SafeLoader


class Role(Enum):
    """What an option names, so that the harness can refuse a bad one before any check runs."""

    VALUE = "value"
    SOURCE = "source"  # the original checkpoint: an existing, readable file, or an http(s) address to fetch it from
    INPUT = "input"  # another file the conversion reads, when given: existing and readable
    MODEL = "model"  # a model directory, or a hub name: from the local cache, else fetched
    OUTPUT = "output"  # the output directory


@dataclass(frozen=True)
class Option:
    """One command-line option (argparse's arguments, and what it names)."""

    flag: str
    help: str
    role: Role = Role.VALUE
    required: bool = False
    default: Any = None
    metavar: str | None = None
    key: str | None = None  # its name in a manifest of conversions (default: its dest)
    choices: tuple[str, ...] | None = None  # the values it takes (argparse refuses others)
    type: Callable[[str], Any] | None = None  # what a value is read as (default: a path for files, else text)
    aliases: tuple[str, ...] = ()  # other spellings (the original training script's, say)
    fetch: tuple[str, ...] = ("config.json",)  # a MODEL's files the run reads besides its weights, where fetched

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def manifest_key(self) -> str:
        return self.key or self.dest


@dataclass(frozen=True)
class Requirement:
    """A package the reference implementation needs, and how to install it (one line)."""

    module: str
    install: str
    distributions: tuple[str, ...] = ()  # those known to provide it (s3prl and ESPnet's fork, say)
    # what tox and CI install it with (``tools/references.py``): each tuple one ``pip install``'s arguments
    pip: tuple[tuple[str, ...], ...] = ()

    def installed(self) -> str | None:
        """``"<distribution> <version>"`` of the package providing ``module``, or None if there is none."""
        try:
            if importlib.util.find_spec(self.module) is None:
                return None
        except (ImportError, ValueError):  # a module entry of None, as a blocked import leaves it
            return None
        for name in self.distributions or (self.module,):  # asked by name: reading every installed one takes 0.3 s
            try:
                distribution = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            if self.module in provided_modules(distribution):
                return f"{distribution.metadata['Name']} {distribution.version}"
        for name in importlib.metadata.packages_distributions().get(self.module, []):
            return f"{name} {importlib.metadata.version(name)}"
        return f"{self.module} (from no installed distribution)"  # on sys.path as a plain directory


def provided_modules(distribution: importlib.metadata.Distribution) -> set[str]:
    """The top-level modules a distribution installs (its top_level.txt, else its files)."""
    listed = distribution.read_text("top_level.txt")
    if listed:
        return set(listed.split())
    return {Path(str(f)).parts[0].removesuffix(".py") for f in distribution.files or () if str(f).endswith(".py")}


@dataclass(frozen=True)
class Converter:
    """Everything the harness needs of one source format."""

    name: str  # the format's key: manifests, reports, the generic command's first argument
    command: str  # the console script: convert-<name>-checkpoint
    description: str
    options: tuple[Option, ...]
    conversion: type[Conversion] | str  # the class, or "module:Class", imported when a conversion runs
    files: frozenset[str]  # what a conversion writes
    checks: tuple[str, ...] = ()  # modules of its own checks ("package.module"), beside the generic ones
    requires: tuple[Requirement, ...] = ()  # the reference implementation's packages
    ignore_warnings: tuple[str, ...] = ()  # -W filters for its checks' session
    validate: str | None = None  # "module:function" taking the options: refusals the command can make up front
    # "module:function" taking the options: the address the source is fetched from where no source option is given
    # (a published model's original, say), or None; and the option that names such a model
    default_source: str | None = None
    default_source_option: str = ""
    example: Example | str | None = None  # synthetic inputs ("module:OBJECT"), for the demo, the bench, the tests

    def conversion_class(self) -> type[Conversion]:
        return self.conversion if isinstance(self.conversion, type) else _load(self.conversion)

    def examples(self) -> Example:
        if self.example is None:
            raise LookupError(f"converter {self.name!r} has no example")
        return _load(self.example) if isinstance(self.example, str) else self.example


class Example(Protocol):
    """Synthetic inputs of a format, built through the original implementation's own code, every weight drawn
    anew: what the demo converts, the benchmark times and the contract tests break."""

    sizes: tuple[str, ...]  # "tiny" first, then larger ones

    def build(self, directory: Path, size: str) -> dict[str, Any]:
        """Write the inputs into ``directory``; return the options (by dest) that convert them, the output aside."""
        ...

    def rewrite(self, source: Path, destination: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Save ``source`` again as ``destination``, its entries (by the names the mapping sees) ``change``d."""
        ...


def _load(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def validator(converter: Converter) -> Any:
    return None if converter.validate is None else _load(converter.validate)


def default_source(converter: Converter, options: Mapping[str, Any]) -> str | None:
    """Where the source is fetched from when no source option names it (the converter's hook), or None."""
    return None if converter.default_source is None else _load(converter.default_source)(options)


@dataclass
class Source:
    """A source checkpoint as the mapping sees it: flat names to tensors (views of the mapped file)."""

    tensors: dict[str, torch.Tensor]
    payload: Any = None  # what else the format read (an s3prl runner checkpoint's Args and Config, say)


@dataclass(frozen=True)
class Target:
    """What the written model must be: its class, its config, and its serialized keys and shapes.

    The class may be named (``"module:Class"``) and the shapes given as a function: each is resolved when a
    check first asks for it, so that reading, mapping and writing alone (the conversion's core) import no
    model code and build no model.
    """

    model: Any  # a transformers PreTrainedModel class, or "module:Class"
    config: Any  # its PretrainedConfig
    shapes: Any  # every serialized key, as a shape-only (meta) tensor: a dict, or a function returning one
    needs: str  # who needs those shapes, for refusals: "the config", "ast-... (stride 10, ...)"
    payload: Any = None
    fields: tuple[Any, ...] = ()  # derived fields (``converters.derivation.Field``), each with where it came from

    @cached_property
    def model_class(self) -> Any:
        return _load(self.model) if isinstance(self.model, str) else self.model

    @cached_property
    def spec(self) -> dict[str, torch.Tensor]:
        shapes: dict[str, torch.Tensor] = self.shapes() if callable(self.shapes) else self.shapes
        return shapes


@dataclass(frozen=True)
class Comparison:
    """The converted model against the original implementation."""

    difference: float  # the largest difference the check quotes
    tolerance: float
    divergence: Divergence | None  # every stage, where located
    cause: str = ""  # why it fails, one line; empty when it passes
    outputs: Any = None  # what the written model computed, for a converter's own checks to reuse
    notes: tuple[str, ...] = ()  # what the report says beside it (each recording's input difference, say)
    # each output from a recording, by the name ``Conversion.recorded`` gives it: (difference, tolerance)
    measured: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.cause


@dataclass
class Conversion:
    """One run of a converter: its options (by argparse dest) and the hooks the generic checks call.

    ``staging`` is the directory the conversion writes into. Hooks take what earlier hooks returned, so
    that the harness decides what is held in memory and for how long.
    """

    options: Mapping[str, Any]
    staging: Path
    converter: Converter
    loader: SafeLoader = field(repr=False, default=None)  # type: ignore[assignment]  # set by the session
    fetcher: Fetcher = field(repr=False, default=None)  # type: ignore[assignment]  # the run's, for optional inputs

    def __post_init__(self) -> None:
        if self.fetcher is None:  # a conversion made outside a command run: the caches, and the network as configured
            from converters.fetch import Fetcher

            self.fetcher = Fetcher()

    # True: ``reference`` runs on a thread of its own, from the moment the target is known, while the checks
    # before the reload run (the files are written meanwhile). For a reference that runs the original's
    # forward pass, whose kernels run with the interpreter lock released: it then costs little wall time.
    # Such a hook reads only its arguments and the options, and changes nothing another hook reads.
    concurrent_reference: ClassVar[bool] = False

    @property
    def source_path(self) -> Path:
        (option,) = [o for o in self.converter.options if o.role is Role.SOURCE]
        return Path(self.options[option.dest])

    @property
    def where(self) -> str:
        """How refusals name the source."""
        return str(self.source_path)

    @property
    def wants_stages(self) -> bool:
        """A report was asked for: ``compare`` locates every stage even where the outputs agree."""
        return self.options.get("report") is not None

    @property
    def verifying(self) -> bool:
        """The run verifies a directory written before (``staging`` is that directory, read and never written)."""
        return self.options.get("verify") is not None

    # -- the hooks: a converter implements these -------------------------------------------------------------

    def read(self) -> Source:
        """Load the source through ``self.loader`` (safely); once per session."""
        raise NotImplementedError

    # True: the format declares numbers beside its tensors (``declared``), which the generic check holds to them
    declares: ClassVar[bool] = False

    def declared(self, source: Source) -> dict[str, tuple[Any, Any]]:
        """What the source declares beside its tensors, and what its tensors hold of the same: name -> (declared,
        found; None where no tensor says). The generic check refuses a source where they differ, before writing.
        Asked only where the class sets ``declares`` (a bare state dict declares nothing)."""
        return {}

    def target(self, source: Source) -> Target:
        raise NotImplementedError

    def mapping(self, source: Source, target: Target) -> KeyMapping:
        raise NotImplementedError

    def expected_source(self, source: Source, target: Target) -> dict[str, torch.Tensor]:
        """The source keys and shapes the target needs (meta tensors): by default, its spec mapped back."""
        return self.mapping(source, target).inverse().apply(target.spec, where=f"the spec of {target.needs}")

    def convert(self, source: Source, target: Target) -> dict[str, torch.Tensor]:
        """The mapped tensors, in the target's serialized layout."""
        return self.mapping(source, target).apply(source.tensors, where=self.where)

    def write(
        self, source: Source, target: Target, tensors: dict[str, torch.Tensor], directory: Path
    ) -> dict[str, torch.Tensor]:
        """Write every file into ``directory``; return the serialized tensors written (for their digests)."""
        raise NotImplementedError

    def written(self, source: Source, target: Target, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What ``write`` would write into the weights files, without writing (a directory is verified against
        it): by default, the mapped tensors."""
        return tensors

    def function_fields(self, target: Target) -> dict[str, dict[str, Any]]:
        """Per JSON file the conversion writes, the fields that change what the model computes and the value
        each must have (``config.json``'s read through the config class, its defaults included)."""
        return {}

    def reference(self, source: Source, target: Target) -> Any:
        """The original implementation, or what it computes: prepared while the source is held, before the
        written model is loaded back (the source is released in between); on a thread of its own where the
        class sets ``concurrent_reference``."""
        return None

    def compare(self, model: nn.Module, reference: Any, target: Target) -> Comparison:
        """The written model, loaded back, against ``reference``; where they part, the locator's stages.
        A hook that needs the source again (to locate a divergence, say) reads it anew with ``read``."""
        raise NotImplementedError

    # -- golden records: the directory alone, no source, no reference (``converters/golden.py``) ----------------------

    def recorded(self, model: nn.Module, extractor: Any) -> Recorded:
        """The directory's pipeline (``extractor``, then ``model``) on the built-in recordings: what the extractor
        made of each, and the outputs, by the names ``compare`` measured them under (``Comparison.measured``).
        Called without a source or a target: a gate without the original calls it."""
        raise NotImplementedError(f"converter {self.converter.name!r} records no outputs")

    def taps(self, model: nn.Module) -> list[tuple[str, Tap]]:
        """The model's stages, in forward order (the locator's, on the converted side): where a gate names outputs
        that moved first moved."""
        return []
