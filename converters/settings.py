"""The JSON files of a model directory, field by field, against what the converter derives.

A directory written before (by this tool, another, or by hand) computes what its config says: every field
that changes the function (an eps, a stride, the labels, the tie flag) must be the converter's. Each
difference is named with both values, and can be written back (``--fix-config``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """A value as JSON holds it: sequences as lists, mappings with string keys, recursively."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def shown(value: Any) -> str:
    """A value as a person reads it: absent, True, 1e-06, 'gelu', [10, 4, 4]."""
    if value is None:
        return "absent"
    if isinstance(value, bool | int | float | str):
        return repr(value)
    text = json.dumps(plain(value))
    return text if len(text) <= 60 else f"{text[:40]}... ({len(value)} entries)"


@dataclass(frozen=True)
class Difference:
    file: str
    field: str
    found: Any
    expected: Any

    def described(self, against: str = "the original computes with", file: bool = False) -> str:
        """One line: the field, its value, and ``against`` the expected one (``file``: config.json named too)."""
        where = "" if self.file == "config.json" and not file else f"{self.file} "
        if isinstance(self.expected, Mapping) and isinstance(self.found, Mapping):
            differing = [k for k in self.expected if str(k) not in {str(f) for f in self.found}
                         or plain(self.found).get(str(k)) != plain(self.expected)[str(k)]]  # fmt: skip
            return (f"{where}{self.field} differs at {len(differing)} of {len(self.expected)} entries (first: "
                    f"{differing[0]}: {shown(plain(self.found).get(str(differing[0])))}, {against} "
                    f"{shown(plain(self.expected)[str(differing[0])])})")  # fmt: skip
        return f"{where}{self.field} {shown(self.found)}, {against} {shown(self.expected)}"


def same(name: str, found: Any, expected: Any) -> bool:
    if isinstance(expected, bool) and found is None:  # a flag left out is off
        return expected is False
    if name == "architectures":  # transformers reads the first; the others are what else the weights fit
        return bool(found) and bool(expected) and found[0] == expected[0]
    return plain(found) == plain(expected)


def compare(fields: Mapping[str, Mapping[str, Any]], directory: Path, config_class: Any) -> list[Difference]:
    """Each field of each file that differs from the value given; config.json is read by ``config_class``, so
    that a field the file leaves out is read as transformers reads it (its default)."""
    found = []
    for file, expected in fields.items():
        path = directory / file
        if file == "config.json":
            config = config_class.from_pretrained(directory)
            values = {name: getattr(config, name, None) for name in expected}
        else:
            raw = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            values = {name: raw.get(name) for name in expected}
        found += [Difference(file, name, values[name], value) for name, value in expected.items()
                  if not same(name, values[name], value)]  # fmt: skip
    return found


def fixed(directory: Path, differences: list[Difference], into: Path) -> None:
    """Write each JSON file that has a difference into ``into``: the directory's own, the fields set right."""
    for file in sorted({d.file for d in differences}):
        # a file the directory lacks (a feature extractor its writer never saved) is written with the fields alone
        raw = json.loads((directory / file).read_text(encoding="utf-8")) if (directory / file).is_file() else {}
        for difference in differences:
            if difference.file == file:
                raw[difference.field] = plain(difference.expected)
                if difference.field == "id2label":  # its inverse, which transformers reads beside it
                    raw["label2id"] = {label: int(index) for index, label in plain(difference.expected).items()}
        (into / file).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
