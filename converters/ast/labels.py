"""Class labels of the AST training recipes, in training-index order (not alphabetical)."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

from converters.ast.spec import Recipe
from converters.errors import ConversionError
from converters.fetch import Fetcher

HUB_LABEL_REPO = "huggingface/label-files"


def id2label(dataset: Recipe) -> dict[int, str]:
    """Labels from the original repository's index CSV shipped with this package (``index,mid,display_name``)."""
    text = resources.files("converters").joinpath("data", "ast", dataset.labels_file).read_text(encoding="utf-8")
    return parse_label_csv(text, dataset.labels_file, dataset.num_labels)


def read_label_csv(path: Path, num_labels: int) -> dict[int, str]:
    """A ``class_labels_indices.csv`` of the user's (the original's ``--label-csv``), held to the model's outputs."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"label file {path} cannot be read: {error}") from None
    return parse_label_csv(text, str(path), num_labels)


def parse_label_csv(text: str, where: str, num_labels: int) -> dict[int, str]:
    """``index,mid,display_name`` rows, in index order: the ``index`` column is the model's output index (the
    original's dataloader reads it so). A missing column, an index that is not 0..N-1 in order (a gap, a
    duplicate), or another count than the model's outputs is named."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("index", "display_name") if c not in (reader.fieldnames or [])]
    if missing:
        raise ConversionError(f"{where} has no {' and no '.join(missing)} column (the original's label files have "
                              f"index,mid,display_name)")  # fmt: skip
    labels: dict[int, str] = {}
    for row_number, row in enumerate(reader):
        line = row_number + 2  # the header is line 1
        try:
            index = int(str(row["index"]).strip())
        except ValueError:
            raise ConversionError(f"{where} line {line}: index {row['index']!r} is not a number") from None
        if index in labels:
            raise ConversionError(f"{where} line {line}: index {index} repeats (it was given to {labels[index]!r})")
        if index != row_number:
            raise ConversionError(f"{where} line {line}: index {index} where {row_number} is due (the rows must list "
                                  f"0..N-1 in order; a gap or a shuffled file is refused)")  # fmt: skip
        labels[index] = str(row["display_name"])
    if len(labels) != num_labels:
        raise ConversionError(f"{where} lists {len(labels)} labels, but the model has {num_labels} outputs")
    return labels


def hub_id2label(dataset: Recipe, fetcher: Fetcher) -> dict[int, str]:
    """The hub's label file the seed script downloaded (``huggingface/label-files``): from the cache, else fetched."""
    assert dataset.hub_label_file is not None, f"{dataset.name} has no hub label file"
    path = fetcher.hub_file(HUB_LABEL_REPO, dataset.hub_label_file, repo_type="dataset")
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
