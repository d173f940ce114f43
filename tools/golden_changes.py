"""Print what a golden update changed: each golden against the committed version (`git show HEAD:...`).

Run by `tox -e regen` after the goldens are rewritten, so that the person updating them sees, per golden
and array, whether it is new, unchanged or by how much it moved, before committing.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.golden_files import GOLDENS, drift_of  # noqa: E402


def committed(path: Path) -> dict[str, np.ndarray] | None:
    relative = path.relative_to(ROOT).as_posix()
    shown = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=ROOT, capture_output=True, check=False)
    if shown.returncode != 0:
        return None
    with np.load(io.BytesIO(shown.stdout)) as stored:
        return {key: stored[key] for key in stored.files}


def changes() -> list[str]:
    lines, unchanged = [], 0
    for path in sorted(GOLDENS.glob("*.npz")):
        before = committed(path)
        with np.load(path) as now:
            arrays = {key: now[key] for key in now.files}
        if before is None:
            lines.append(f"new        {path.stem}")
            continue
        moved = [
            f"{key}: {drift_of(before[key], array)}" if key in before else f"{key}: new array"
            for key, array in arrays.items()
            if key not in before or before[key].shape != array.shape or not np.array_equal(before[key], array)
        ]
        moved += [f"{key}: removed" for key in before.keys() - arrays.keys()]
        if moved:
            lines.append(f"changed    {path.stem}: " + "; ".join(moved))
        else:
            unchanged += 1
    return [*lines, f"unchanged  {unchanged} golden file(s)"]


if __name__ == "__main__":
    print("\n".join(changes()))
