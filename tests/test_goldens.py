"""The golden files themselves: none stale, none missing, every sidecar showing its arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.golden_files import GOLDENS, expected_goldens, read_sidecar


def test_every_golden_belongs_to_a_registered_converter() -> None:
    from converters import registry
    from fixtures.golden_files import GOLDENS_OF

    assert set(GOLDENS_OF) <= set(registry.names())
    for converter, names in GOLDENS_OF.items():
        assert all(name.startswith(f"{converter}_") for name in names()), converter


def test_every_golden_file_is_used() -> None:
    on_disk = {path.stem for path in GOLDENS.iterdir() if path.suffix in (".npz", ".txt")}
    stale = sorted(on_disk - expected_goldens())
    missing = sorted(expected_goldens() - on_disk)
    assert not stale, f"golden files no test reads (delete them): {stale}"
    assert not missing, f"goldens missing (run `tox -e regen`): {missing}"


@pytest.mark.parametrize("name", sorted(expected_goldens()))
def test_golden_sidecar_shows_the_stored_arrays(name: str) -> None:
    stored = np.load(GOLDENS / f"{name}.npz")
    shown = read_sidecar(GOLDENS / f"{name}.txt")
    assert shown.keys() == set(stored.files)
    for key, array in shown.items():
        assert array.dtype == stored[key].dtype and array.shape == stored[key].shape
        assert np.array_equal(array, stored[key]), f"{name}.txt is out of date with {name}.npz: run `tox -e regen`"
