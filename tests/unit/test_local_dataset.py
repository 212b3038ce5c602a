"""The in-process dataset of small ingests (no Ray cluster): the batches its functions see are Ray Data's."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from mlplatform.data.local import LocalDataset, as_pandas


def test_batches_are_converted_as_ray_data_converts_them():
    """Ray 2.56+ hands `map_batches` Arrow-backed pandas columns: an int column with a null stays int (numpy
    would make it float, and a quarantined record would read `1562.0` on one path and `1562` on the other)."""
    seen = {}

    def look(batch: pd.DataFrame) -> pd.DataFrame:
        seen["batch"] = batch
        return batch.assign(n=batch["id"] * 2)

    out = LocalDataset(pa.table({"id": pa.array([1, None, 3], pa.int64())})).map_batches(look, batch_format="pandas")
    assert str(seen["batch"]["id"].dtype) == "int64[pyarrow]" and as_pandas(pa.table({"a": [1]}))["a"].iloc[0] == 1
    assert out.take_all() == [{"id": 1, "n": 2}, {"id": None, "n": None}, {"id": 3, "n": 6}]


def test_groupby_count_union_and_an_empty_write(tmp_path):
    a = LocalDataset(pa.table({"k": ["x", "y", "x"]}))
    counts = {
        r["k"]: r["count()"] for r in a.union(LocalDataset(pa.table({"k": ["x"]}))).groupby("k").count().take_all()
    }
    assert counts == {"x": 3, "y": 1}  # Ray's column name for the count
    fs = pafs.LocalFileSystem()
    a.write_parquet(str(tmp_path / "t"), filesystem=fs)
    assert pd.read_parquet(tmp_path / "t")["k"].tolist() == ["x", "y", "x"]
    LocalDataset(pa.table({"k": pa.array([], pa.string())})).write_parquet(str(tmp_path / "q"), filesystem=fs)
    assert not (tmp_path / "q").exists()  # as Ray writes an empty dataset: nothing


def test_a_small_input_ingests_here_without_asking_the_cluster_and_memory_is_read():
    from mlplatform.data.local import SMALL_INPUT_BYTES, available_memory, ingest_in_process, with_path

    assert ingest_in_process(SMALL_INPUT_BYTES)  # no Ray needed for the answer (none is running here)
    assert 0 < available_memory() < 1 << 50
    rows = with_path(pa.table({"a": [1, 2]}), "/data/x.csv")
    assert pa.types.is_dictionary(rows["path"].type) and rows["path"].to_pylist() == ["/data/x.csv"] * 2
