"""Class labels of the AST training recipes, in training-index order (not alphabetical)."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources

from converters.ast.variants import Dataset
from converters.errors import ConversionError
from converters.hub import cached_hub_file

HUB_LABEL_REPO = "huggingface/label-files"


def id2label(dataset: Dataset) -> dict[int, str]:
    """Labels from the original repository's index CSV shipped with this package.

    The row's ``index`` column is the model's output index; the file is checked to list 0..N-1 in order.
    """
    text = resources.files("converters").joinpath("data", "ast", dataset.labels_file).read_text(encoding="utf-8")
    labels: dict[int, str] = {}
    for row_number, row in enumerate(csv.DictReader(io.StringIO(text))):
        if int(row["index"]) != row_number:
            raise ConversionError(f"{dataset.labels_file}: row {row_number} has index {row['index']}")
        labels[row_number] = row["display_name"]
    if len(labels) != dataset.num_labels:
        raise ConversionError(f"{dataset.labels_file} lists {len(labels)} labels, expected {dataset.num_labels}")
    return labels


def cached_hub_id2label(dataset: Dataset) -> dict[int, str] | None:
    """The hub's label file the old conversion script downloaded, if the local cache holds it."""
    path = cached_hub_file(HUB_LABEL_REPO, dataset.hub_label_file)
    if path is None:
        return None
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
