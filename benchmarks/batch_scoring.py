"""Batch scoring benchmark: mlplatform's two ways (in the job's process, a Ray Data actor pool) vs a single-process
inplace_predict loop.

    python benchmarks/batch_scoring.py [--rows 2000000] [--features 20] [--trees 100]

Both sides score the same Parquet file with the same booster and write Parquet (key, prediction):

  plain      one process: pyarrow reads the file, a float32 matrix, `inplace_predict` per 65 536-row chunk with
             XGBoost's threads = the machine's CPUs, pyarrow writes the output.
  mlplatform the scoring stage of `mlplatform predict` as it runs on one node (`mlplatform.serve.batch.score_here`:
             the input streamed batch by batch through `_Scorer` in the job's process, raw values encoded as the
             endpoint does, output with model_version and error, XGBoost's threads on Ray's free CPUs), on
             `ray.init(num_cpus=N)`. The registry lookups of a real `mlplatform predict` (≈ 1 s) are left out:
             they do not grow with the file.
  pool       the same with `--distributed` (what a cluster of several nodes gets): `_Scorer` on an autoscaling
             actor pool, one actor per CPU, one XGBoost thread each.
  3 nodes    (--cluster) the same on `ray.cluster_utils.Cluster`: a head and two workers, 1 CPU each, to show
             how it spreads; on one machine the nodes share its cores, so this says nothing about speed-up.

Reports rows per second and the ratio. Writes benchmarks/results/batch_scoring-<date>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from _record import save  # noqa: E402


def make_data(folder: Path, rows: int, features: int, trees: int) -> tuple[Path, bytes, list[str]]:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    names = [f"x{j}" for j in range(features)]
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + rng.normal(scale=0.5, size=rows) > 0).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 6, "tree_method": "hist"},
        xgb.DMatrix(x[:100_000], label=y[:100_000], feature_names=names),
        trees,
    )
    table = pa.table({"id": np.arange(rows), **{n: x[:, j] for j, n in enumerate(names)}})
    path = folder / "input.parquet"
    pq.write_table(table, path, row_group_size=131_072)
    return path, bytes(booster.save_raw("ubj")), names


def plain(path: Path, raw: bytes, names: list[str], out: Path, threads: int) -> float:
    import xgboost as xgb

    start = time.perf_counter()
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    booster.set_param({"nthread": threads})
    table = pq.read_table(path)
    x = np.column_stack([table[n].to_numpy() for n in names]).astype(np.float32, copy=False)
    preds = np.concatenate([booster.inplace_predict(x[i : i + 65_536]) for i in range(0, len(x), 65_536)])
    pq.write_table(pa.table({"id": table["id"], "prediction": preds.astype(np.float64)}), out)
    return time.perf_counter() - start


def here(path: Path, raw: bytes, names: list[str], out: Path) -> float:
    """What `mlplatform predict` does on a one-node cluster: the input streamed through one scorer here."""
    from mlplatform.serve.batch import _Scorer, score_here

    start = time.perf_counter()
    score_here(_Scorer(raw, names, {}, "id", "1"), str(path), "parquet", ["id", *names], str(out))
    return time.perf_counter() - start


def ours(path: Path, raw: bytes, names: list[str], out: Path, cpus: int) -> float:
    """The scoring stage as `score()` sizes it: one actor per CPU, the CPUs less a read's share split among them."""
    import ray
    import ray.data
    from mlplatform.serve.batch import BATCH_ROWS, READ_CPUS, _Scorer

    start = time.perf_counter()
    ds = ray.data.read_parquet(str(path), num_cpus=READ_CPUS)
    scored = ds.select_columns(["id", *names]).map_batches(
        _Scorer,
        fn_constructor_kwargs={"raw": ray.put(raw), "features": names, "categories": {}, "key": "id", "version": "1"},
        batch_format="pyarrow",
        batch_size=BATCH_ROWS,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus)),
        num_cpus=(cpus - READ_CPUS) / cpus,
    )
    scored.write_parquet(str(out))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-node local Ray cluster")
    args = parser.parse_args()
    import ray

    cpus = os.cpu_count() or 2
    results = {"rows": args.rows, "features": args.features, "trees": args.trees, "cpus": cpus}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        path, raw, names = make_data(folder, args.rows, args.features, args.trees)
        plain(path, raw, names, folder / "warm.parquet", cpus)  # page cache and XGBoost warm for both
        results["plain_s"] = round(plain(path, raw, names, folder / "plain.parquet", cpus), 2)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        here(path, raw, names, folder / "warm-here")
        results["mlplatform_s"] = round(here(path, raw, names, folder / "here"), 2)
        ours(path, raw, names, folder / "warm-ours", cpus)
        results["pool_s"] = round(ours(path, raw, names, folder / "ours", cpus), 2)
        ray.shutdown()
        if args.cluster:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            results["three_nodes_s"] = round(ours(path, raw, names, folder / "nodes", 3), 2)
            ray.shutdown()
            cluster.shutdown()
        base = pq.read_table(folder / "plain.parquet").to_pandas().set_index("id").sort_index()
        for side in ("here", "ours"):
            check = pq.read_table(folder / side).to_pandas().set_index("id").sort_index()
            results[f"identical_predictions_{side}"] = bool(
                np.array_equal(check["prediction"].to_numpy(np.float32), base["prediction"].to_numpy(np.float32))
            )
    for side in ("plain", "mlplatform", "pool", "three_nodes"):
        if f"{side}_s" in results:
            results[f"{side}_rows_per_s"] = round(args.rows / results[f"{side}_s"])
    results["ratio"] = round(results["mlplatform_rows_per_s"] / results["plain_rows_per_s"], 2)
    results["pool_ratio"] = round(results["pool_rows_per_s"] / results["plain_rows_per_s"], 2)
    print(results)
    print(f"saved {save('batch_scoring', results)}")


if __name__ == "__main__":
    main()
