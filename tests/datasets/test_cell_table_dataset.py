"""A grid cell's table: written whole or not at all, so a cell counts as finished only when it is."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io.core import DatasetError

from tpir_kedro.datasets import CellTableDataset


def test_a_table_round_trips_with_its_header_even_when_empty(tmp_path):
    dataset = CellTableDataset(filepath=str(tmp_path / "cells" / "clip__B__seed0" / "probe_metrics.csv"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="not written yet"):
        dataset.load()
    dataset.save(pd.DataFrame(columns=["variant", "macro_f1"]))
    assert dataset.exists() and list(dataset.load().columns) == ["variant", "macro_f1"]
    table = pd.DataFrame({"variant": ["clip"], "macro_f1": [0.5]})
    dataset.save(table)
    pd.testing.assert_frame_equal(dataset.load(), table)


def test_a_save_that_fails_leaves_the_table_as_it_was_and_no_stray_file(tmp_path, monkeypatch):
    path = tmp_path / "probe_metrics.csv"
    dataset = CellTableDataset(filepath=str(path))
    dataset.save(pd.DataFrame({"a": [1]}))

    def broken(self, target, **kwargs):
        open(target, "w").write("a\n")  # half a table, then the write dies
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(DatasetError):
        dataset.save(pd.DataFrame({"a": [2, 3]}))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [path]
    pd.testing.assert_frame_equal(dataset.load(), pd.DataFrame({"a": [1]}))
    with pytest.raises(DatasetError, match="DataFrame"):
        dataset.save({"a": 1})
