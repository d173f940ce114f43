"""Everything besides the weights that fixes an AST checkpoint's function, each value with where it came from.

What the weights fix is read from them (``converters.ast.layout``). What they do not fix comes from the options a
user copies from the training run (``--fstride --tstride --audio_length --num_mel_bins --dataset_mean
--dataset_std --label_csv``), from a recipe (``--recipe``) or a published model (``--model_name``); the strides and
the input length are derived only where the position rows and the options leave one choice, else refused with
the choices that fit and the option that decides between them. Normalization statistics are never assumed: a
silent AudioSet default would change the function a user runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.ast.labels import id2label, read_label_csv
from converters.ast.layout import Layout
from converters.ast.spec import NUM_MEL_BINS, PATCH, RECIPES, Recipe, Spec
from converters.ast.variants import VARIANTS, Variant, variant
from converters.derivation import Field
from converters.errors import ConversionError

STRIDES = range(1, PATCH + 1)  # a stride beyond the patch side would skip frames: none of the recipes does
POOLINGS = ("cls", "mean")  # SSAST's ft_cls and ft_avgtok
# The options that say what the weights do not, by argparse dest: each a fact of the function
FACTS = ("fstride", "tstride", "audio_length", "num_mel_bins", "dataset_mean", "dataset_std")
PRETRAINING_SOURCES = {
    "num_mel_bins": "the checkpoint's p_input_fdim",
    "audio_length": "the checkpoint's p_input_tdim",
    "fstride": "SSAST pretraining: no overlap, the stride is the patch's side",
    "tstride": "SSAST pretraining: no overlap, the stride is the patch's side",
}


@dataclass(frozen=True)
class Derived:
    spec: Spec
    fields: tuple[Field, ...]  # config and extractor fields, each with where it came from
    variant: Variant | None = None  # a published model, named or read off the shapes
    recipe: Recipe | None = None


@dataclass(frozen=True)
class Grid:
    """Strides, and the input lengths they fit the position rows at (any length in the range computes the same:
    frames past the last patch are never read)."""

    fstride: int
    tstride: int
    shortest: int
    longest: int

    def described(self) -> str:
        frames = f"{self.shortest}" if self.shortest == self.longest else f"{self.shortest}-{self.longest}"
        return f"{self.fstride}/{self.tstride} at {frames} frames"


def grids(positions: int, num_mel_bins: int, fstride: int | None = None, tstride: int | None = None,
          length: int | None = None) -> list[Grid]:  # fmt: skip
    """Every (strides, length) the original's patch grid fits ``positions`` rows with (two of them the tokens)."""
    patches = positions - 2
    found: list[Grid] = []
    if num_mel_bins < PATCH or patches < 1:
        return found
    for fs in [fstride] if fstride is not None else STRIDES:
        f_dim = (num_mel_bins - PATCH) // fs + 1
        if patches % f_dim:
            continue
        t_dim = patches // f_dim
        for ts in [tstride] if tstride is not None else STRIDES:
            shortest, longest = PATCH + (t_dim - 1) * ts, PATCH + t_dim * ts - 1
            if length is None:
                found.append(Grid(fs, ts, shortest, longest))
            elif shortest <= length <= longest:
                found.append(Grid(fs, ts, length, length))
    return found


def listed(found: list[Grid]) -> str:
    """Equal strides first (every recipe's), then how many more there are with unequal ones."""
    equal = [g for g in found if g.fstride == g.tstride]
    shown = equal[:6] if equal else found[:6]
    rest = len(found) - len(shown)
    more = f" (and {rest} more with {'unequal strides' if equal else 'other strides'})" if rest else ""
    return ", ".join(g.described() for g in shown) + more


def _number(value: Any, flag: str, kind: type) -> Any:
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConversionError(f"{flag} {value!r} is not {'an integer' if kind is int else 'a number'}") from None


def published_by_shape(layout: Layout) -> list[Variant]:
    """The published variants whose position rows and label count the checkpoint has."""
    return [v for v in VARIANTS if v.spec.positions == layout.positions and v.dataset.num_labels == layout.num_labels]


def derive(layout: Layout, options: Mapping[str, Any], where: str) -> Derived:
    """The spec of ``layout``'s checkpoint under ``options``, or one refusal naming everything that is missing."""
    given = {name: options.get(name) for name in FACTS}
    given |= {k: _number(given[k], f"--{k}", int) for k in ("fstride", "tstride", "audio_length", "num_mel_bins")}
    given |= {k: _number(given[k], f"--{k}", float) for k in ("dataset_mean", "dataset_std")}
    pooling = options.get("pooling") or "cls"
    if pooling not in POOLINGS:
        raise ConversionError(f"--pooling {pooling!r}: choose cls or mean")
    if pooling == "mean" and not layout.pretraining:
        raise ConversionError(
            "--pooling mean (SSAST's ft_avgtok, its recipes' default: the mean of the patch tokens) cannot be "
            "converted: transformers' AST pools the class and distillation tokens ((x[0] + x[1]) / 2, SSAST's ft_cls)"
        )
    named = options.get("model_name")
    recipe_name = options.get("recipe")
    if recipe_name is not None and recipe_name not in RECIPES:
        raise ConversionError(f"--recipe {recipe_name!r}: choose {', '.join(RECIPES)}")
    recipe = RECIPES[recipe_name] if recipe_name is not None else None
    chosen = variant(named) if named is not None else None
    anything = any(v is not None for v in given.values()) or recipe is not None or options.get("label_csv")
    shape_source = ""
    if chosen is None and not anything and not layout.pretraining:
        fitting = published_by_shape(layout)
        if len(fitting) == 1:
            chosen = fitting[0]
            shape_source = (f"read off the checkpoint's shapes: only {chosen.name} has {layout.positions} position rows"
                            f" and {layout.num_labels} labels")  # fmt: skip
        elif fitting:
            raise ConversionError(
                f"{where} fits {', '.join(v.name for v in fitting)} ({layout.positions} position rows, "
                f"{layout.num_labels} labels): name the variant with --model_name (the published logits differ), or "
                f"give --recipe {fitting[0].dataset.name} (they share what the function depends on)"
            )
    if chosen is not None:
        return _from_variant(chosen, given, options, shape_source or f"--model_name {named}")
    return _from_options(layout, given, options, recipe, where)


def _from_variant(chosen: Variant, given: Mapping[str, Any], options: Mapping[str, Any], source: str) -> Derived:
    """A published model fixes every fact: a given option that contradicts it is refused, naming both."""
    spec = chosen.spec
    facts = {"fstride": spec.fstride, "tstride": spec.tstride, "audio_length": spec.max_length,
             "num_mel_bins": spec.num_mel_bins, "dataset_mean": spec.feature_mean,
             "dataset_std": spec.feature_std}  # fmt: skip
    for name, value in given.items():
        if value is not None and value != facts[name]:
            raise ConversionError(f"--{name} {value}, but {chosen.name} was trained with {facts[name]}")
    if options.get("recipe") not in (None, chosen.dataset.name):
        raise ConversionError(f"--recipe {options['recipe']}, but {chosen.name} was trained with {chosen.dataset.name}")
    labels = spec.labels
    label_source = f"{source}: the original's {chosen.dataset.labels_file}"
    if options.get("label_csv") is not None:
        labels = tuple(read_label_csv(Path(options["label_csv"]), chosen.dataset.num_labels).values())
        if labels != spec.labels:
            raise ConversionError(f"--label_csv {options['label_csv']} disagrees with {chosen.name}'s labels "
                                  f"({chosen.dataset.labels_file})")  # fmt: skip
        label_source = f"--label_csv {options['label_csv']}"
    _check_n_class(options, chosen.dataset.num_labels, source)
    fields = _fields(spec, {k: source for k in FACTS}, label_source)
    return Derived(spec, fields, chosen, chosen.dataset)


def _check_n_class(options: Mapping[str, Any], num_labels: int | None, source: str) -> None:
    n_class = _number(options.get("n_class"), "--n_class", int)
    if n_class is not None and n_class != num_labels:
        raise ConversionError(f"--n_class {n_class}, but {source} has {num_labels} outputs")


def _from_options(layout: Layout, given: dict[str, Any], options: Mapping[str, Any], recipe: Recipe | None,
                  where: str) -> Derived:  # fmt: skip
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if recipe is not None:
        recipe_values = {"fstride": recipe.stride, "tstride": recipe.stride, "audio_length": recipe.max_length,
                         "num_mel_bins": NUM_MEL_BINS, "dataset_mean": recipe.feature_mean,
                         "dataset_std": recipe.feature_std}  # fmt: skip
        for name, value in recipe_values.items():
            values[name], sources[name] = value, f"--recipe {recipe.name} (egs/{recipe.name})"
    for name, value in given.items():
        if value is not None:
            values[name], sources[name] = value, f"--{name} {value}"
    pooled = f"{layout.positions} position rows"
    if layout.pretraining:
        assert layout.pretraining_input is not None
        fdim, tdim = layout.pretraining_input
        checked = {"num_mel_bins": fdim, "audio_length": tdim, "fstride": PATCH, "tstride": PATCH}
        for name, value in checked.items():  # over a recipe's; an option that says otherwise is refused
            if given.get(name) is not None and given[name] != value:
                raise ConversionError(
                    f"--{name} {given[name]}, but the SSAST pretraining checkpoint was trained with {value} "
                    f"(p_input_fdim {fdim}, p_input_tdim {tdim}, no patch overlap)"
                )
            values[name] = value
            sources[name] = PRETRAINING_SOURCES[name]
    if "num_mel_bins" not in values:
        values["num_mel_bins"], sources["num_mel_bins"] = NUM_MEL_BINS, "the original's input_fdim (every recipe's)"
    problems = []
    found = grids(layout.positions, values["num_mel_bins"], values.get("fstride"), values.get("tstride"),
                  values.get("audio_length"))  # fmt: skip
    if not found:
        asked = ", ".join(f"--{k} {values[k]}" for k in ("fstride", "tstride", "audio_length") if k in values)
        fit = grids(layout.positions, values["num_mel_bins"])
        problems.append(
            f"{layout.key('v.pos_embed')} has {pooled}, which no strides fit at {values['num_mel_bins']} mel bins"
            + (f" with {asked}" if asked else "")
            + (f"; they fit {listed(fit)}" if fit else " (--num_mel_bins decides the rows per frame column)")
        )
    elif len(found) > 1 or found[0].shortest != found[0].longest:
        if len({(g.fstride, g.tstride) for g in found}) == 1:
            deciding = "--audio_length"
        elif "audio_length" in values:
            deciding = "--fstride and --tstride"
        else:
            deciding = "--audio_length, or --fstride and --tstride"
        problems.append(
            f"{layout.key('v.pos_embed')} has {pooled}, which fit {listed(found)} at {values['num_mel_bins']} mel "
            f"bins: give {deciding} (the training run's, or --recipe)"
        )
    else:
        grid = found[0]
        derived = f"derived: the only one that fits the {pooled}" + (
            f" with {', '.join(sources[k] for k in ('fstride', 'tstride', 'audio_length') if k in sources)}"
            if any(k in sources for k in ("fstride", "tstride", "audio_length")) else "")  # fmt: skip
        for name, value in (("fstride", grid.fstride), ("tstride", grid.tstride), ("audio_length", grid.shortest)):
            values[name] = value
            sources.setdefault(name, derived)
    missing = [k for k in ("dataset_mean", "dataset_std") if k not in values]
    if missing:
        problems.append(
            f"the normalization statistics are the training run's: give {' and '.join('--' + k for k in missing)} "
            f"(or --recipe); an AudioSet default would change the function"
        )
    if problems:
        raise ConversionError(f"{where} ({layout.described}): " + "; and ".join(problems))
    labels, label_source = _labels(layout, options, recipe)
    _check_n_class(options, layout.num_labels, where)
    spec = Spec(values["fstride"], values["tstride"], values["audio_length"], values["dataset_mean"],
                values["dataset_std"], values["num_mel_bins"], labels)  # fmt: skip
    return Derived(spec, _fields(spec, sources, label_source), None, recipe)


def _labels(layout: Layout, options: Mapping[str, Any], recipe: Recipe | None) -> tuple[tuple[str, ...] | None, str]:
    if layout.num_labels is None:
        return None, "an SSAST pretraining checkpoint: no head, no labels"
    path = options.get("label_csv")
    if path is not None:
        return tuple(read_label_csv(Path(path), layout.num_labels).values()), f"--label_csv {path}"
    if recipe is not None and recipe.num_labels == layout.num_labels:
        labels = id2label(recipe)
        source = f"--recipe {recipe.name}: the original's {recipe.labels_file}"
        return tuple(labels[i] for i in range(len(labels))), source
    why = (f"the checkpoint has {layout.num_labels} outputs, the {recipe.name} recipe {recipe.num_labels}"
           if recipe is not None else "no --label_csv given")  # fmt: skip
    return tuple(f"LABEL_{i}" for i in range(layout.num_labels)), f"LABEL_i: {why} (--label_csv names them)"


def _fields(spec: Spec, sources: Mapping[str, str], label_source: str) -> tuple[Field, ...]:
    return (
        Field("frequency_stride", spec.fstride, sources["fstride"]),
        Field("time_stride", spec.tstride, sources["tstride"]),
        Field("max_length", spec.max_length, sources["audio_length"]),
        Field("num_mel_bins", spec.num_mel_bins, sources["num_mel_bins"]),
        Field("mean", spec.feature_mean, sources["dataset_mean"]),
        Field("std", spec.feature_std, sources["dataset_std"]),
        Field("id2label", None if spec.labels is None else f"{len(spec.labels)} labels", label_source),
    )
