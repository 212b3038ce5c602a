"""Training benchmarks: data-parallel fit vs plain xgboost, ASHA vs full budget, a killed trial.

    python benchmarks/train.py [--rows 1000000] [--features 28] [--rounds 100] [--only fit,default,hpo,fault]

1. fit   — one fit of `rows` × `features` float features (Parquet → booster, hist, depth 6, `rounds` rounds):
           mlplatform's data-parallel mode (a Tune trial driving a Ray Train XGBoostTrainer, 2 workers ×
           0.5 CPU and 1 thread each, reports every 25 rounds) vs plain `xgboost.train` with 2 threads, same
           run. Both times include reading the Parquet and building the DMatrix; Ray's start-up is excluded.
   default — the same fit as a user gets it with no `mode:` (auto → per-trial here): the pipeline's training
           read (`load_training_data`) and a one-trial search with 2 CPUs, reports every 25 rounds.
2. hpo   — 16 configurations on the same data in per-trial mode (one process per trial, 1 thread, 2 at a
           time): ASHA vs FIFO running all 16 to the full budget. Reports the best AUC of each and the
           trial-seconds (sum of every trial's time) of each.
3. fault — a 4-trial search where one trial's worker process is killed (SIGKILL) after its first checkpoint;
           `max_failures=1` retries it from that checkpoint. Reports what every trial did.

Runs on an embedded `ray.init(num_cpus=2)`; writes benchmarks/results/train-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _record import save

ROOT = Path(__file__).resolve().parents[1]


def make_table(path: Path, rows: int, features: int, seed: int = 0) -> list[str]:
    """A HIGGS-like table: float features, a label that depends non-linearly on several of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) - 0.5 * x[:, 3] ** 2 + 0.8 * x[:, 4] + 0.3 * x[:, 5:10].sum(axis=1)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    names = [f"f{i}" for i in range(features)]
    cols = {"id": pa.array(np.arange(rows, dtype=np.int64))} | {n: pa.array(x[:, i]) for i, n in enumerate(names)}
    cols["label"] = pa.array(y)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path / "part-0.parquet", row_group_size=131072)
    return names


def dataset_version(table: Path, features: list[str], rows: int):
    from mlplatform.data.version import DatasetVersion

    files = [{"path": f"{table.name}/{p.name}", "size": p.stat().st_size} for p in sorted(table.glob("*.parquet"))]
    manifest = {
        "files": {"table_dir": table.name, "table": files, "quarantine_dir": "quarantine", "profile": "profile.json"},
        "version": "bench",
        "fingerprint": "-",
        "features": features,
        "label": "label",
        "key": "id",
        "rows": rows,
        "validation_fraction": 0.2,
        "name": "bench",
    }
    return DatasetVersion(str(table.parent), manifest)


def plain_fit(table: Path, features: list[str], rounds: int) -> dict:
    import xgboost as xgb
    from mlplatform.train.common import split_frame

    started = time.perf_counter()
    df = pq.read_table(table).to_pandas()
    train, val = (split_frame(df, "id", 0.2, validation=v) for v in (False, True))
    dtrain = xgb.DMatrix(train[features].to_numpy("float32"), label=train["label"].to_numpy("float32"))
    dval = xgb.DMatrix(val[features].to_numpy("float32"), label=val["label"].to_numpy("float32"))
    log: dict = {}
    xgb.train(
        {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "max_depth": 6,
            "eta": 0.1,
            "nthread": 2,
            "eval_metric": "auc",
        },
        dtrain,
        rounds,
        evals=[(dval, "val")],
        evals_result=log,
        verbose_eval=False,
    )
    return {"seconds": time.perf_counter() - started, "val_auc": log["val"]["auc"][-1]}


def train_config(**kw):
    from mlplatform.train.config import TrainConfig

    return TrainConfig.model_validate({"model_name": "bench", "experiment": "bench", "seed": 3, **kw})


def dp_fit(table: Path, features: list[str], rows: int, rounds: int, storage: str) -> dict:
    from mlplatform.train.search import TrainingData, search

    cfg = train_config(
        mode="data_parallel",
        num_workers=2,
        cpus_per_trial=0.5,  # 2 × 0.5 leaves Ray Data the whole CPU it needs to stream the shards
        num_boost_round=rounds,
        report_every=25,
        num_samples=1,
        scheduler="fifo",
        params={"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1},
    )
    empty = np.zeros((0, len(features)), np.float32)
    started = time.perf_counter()
    outcomes = search(
        cfg,
        TrainingData(features, empty, empty[:, 0], empty, empty[:, 0]),
        storage_path=storage,
        name=f"fit-{int(time.time())}",
        mode="data_parallel",
        dataset=dataset_version(table, features, rows),
    )
    seconds = time.perf_counter() - started
    (o,) = outcomes
    return {"seconds": seconds, "val_auc": o.metrics.get("val_auc"), "error": o.error}


def default_fit(table: Path, features: list[str], rows: int, rounds: int, storage: str) -> dict:
    """The fit a user gets with no `mode:` (auto): the pipeline's training read, then one per-trial search."""
    from mlplatform.train.search import load_training_data, resolve_mode, search

    cfg = train_config(
        cpus_per_trial=2,
        num_boost_round=rounds,
        report_every=25,
        num_samples=1,
        scheduler="fifo",
        params={"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1},
    )
    started = time.perf_counter()
    data = load_training_data(dataset_version(table, features, rows))
    read = time.perf_counter() - started
    mode = resolve_mode(cfg, rows)
    (o,) = search(cfg, data, storage_path=storage, name=f"default-{int(time.time())}", mode=mode)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read_seconds": read,
        "mode": mode,
        "val_auc": o.metrics.get("val_auc"),
        "error": o.error,
    }


def load_arrays(table: Path, features: list[str]):
    from mlplatform.train.common import split_frame
    from mlplatform.train.search import TrainingData

    df = pq.read_table(table).to_pandas()
    train, val = (split_frame(df, "id", 0.2, validation=v) for v in (False, True))
    return TrainingData(
        features,
        train[features].to_numpy("float32"),
        train["label"].to_numpy("float32"),
        val[features].to_numpy("float32"),
        val["label"].to_numpy("float32"),
    )


SPACE = {
    "max_depth": {"type": "randint", "low": 3, "high": 10},
    "eta": {"type": "loguniform", "low": 0.02, "high": 0.3},
    "subsample": {"type": "uniform", "low": 0.5, "high": 1.0},
    "min_child_weight": {"type": "choice", "values": [1, 5, 20]},
}


def hpo(data, rounds: int, storage: str, scheduler: str) -> dict:
    from mlplatform.train.search import search

    cfg = train_config(
        num_boost_round=rounds,
        report_every=10,
        num_samples=16,
        max_concurrent_trials=2,
        cpus_per_trial=1,
        scheduler=scheduler,
        search_space=SPACE,
        params={"objective": "binary:logistic", "tree_method": "hist"},
    )
    started = time.perf_counter()
    outcomes = search(cfg, data, storage_path=storage, name=f"hpo-{scheduler}-{int(time.time())}")
    wall = time.perf_counter() - started
    trial_seconds = sum(float(o.metrics.get("time_total_s", 0.0)) for o in outcomes)
    best = max(float(o.metrics.get("val_auc", 0.0)) for o in outcomes)
    return {
        "wall_seconds": wall,
        "trial_seconds": trial_seconds,
        "best_val_auc": best,
        "rounds": sorted(int(o.metrics.get("round", 0)) for o in outcomes),
        "configs": sorted(json.dumps({k: o.config[k] for k in SPACE}, sort_keys=True) for o in outcomes),
    }


def fault(data, rounds: int, storage: str) -> dict:
    """Kill one trial's process after its first checkpoint; max_failures=1 must finish it from there."""
    from mlplatform.train.search import search

    cfg = train_config(
        num_boost_round=rounds,
        report_every=10,
        num_samples=4,
        max_concurrent_trials=2,
        cpus_per_trial=1,
        scheduler="fifo",
        max_failures=1,
        search_space=SPACE,
        params={"objective": "binary:logistic", "tree_method": "hist"},
    )
    name = f"fault-{int(time.time())}"
    killed: dict = {}

    def killer() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for ckpt in Path(storage, name).glob("*/checkpoint_000000"):
                trials = subprocess.run(["pgrep", "-f", "ray::ImplicitFunc"], capture_output=True, text=True)
                pids = trials.stdout.split()
                if pids:
                    os.kill(int(pids[0]), signal.SIGKILL)
                    killed.update(pid=int(pids[0]), after=ckpt.parent.name, at=time.time())
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    started = time.perf_counter()
    outcomes = search(cfg, data, storage_path=storage, name=name)
    thread.join(timeout=1)
    trials = []
    for trial_dir in sorted(Path(storage, name).glob("_trainable_*")):
        lines = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x.strip()]
        trials.append(
            {
                "trial": trial_dir.name[:24],
                "reports": [x.get("round") for x in lines],
                "errored": (trial_dir / "error.txt").exists(),
            }
        )
    return {
        "seconds": time.perf_counter() - started,
        "killed": killed,
        "trials": trials,
        "finished": sum(1 for o in outcomes if o.error is None and o.metrics.get("round") == rounds),
        "errors": [o.error for o in outcomes if o.error],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=28)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--only", default="fit,default,hpo,fault")
    args = p.parse_args()
    wanted = set(args.only.split(","))

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    table = work / "table"
    features = make_table(table, args.rows, args.features)
    storage = str(work / "tune")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    results: dict = {"rows": args.rows, "features": args.features, "rounds": args.rounds, "cpus": os.cpu_count()}
    if "fit" in wanted:
        results["plain"] = plain_fit(table, features, args.rounds)
        plain = results["plain"]
        print(f"plain xgboost.train (2 threads): {plain['seconds']:.1f}s  auc {plain['val_auc']:.4f}", flush=True)
        results["data_parallel"] = dp_fit(table, features, args.rows, args.rounds, storage)
        dp = results["data_parallel"]
        print(
            f"mlplatform data-parallel (2 workers): {dp['seconds']:.1f}s  auc {dp['val_auc']}  "
            f"ratio {dp['seconds'] / results['plain']['seconds']:.2f}× {dp['error'] or ''}",
            flush=True,
        )
    if "default" in wanted:
        plain = results.get("plain") or plain_fit(table, features, args.rounds)
        results["plain"] = plain
        results["default"] = d = default_fit(table, features, args.rows, args.rounds, storage)
        print(
            f"mlplatform default fit ({d['mode']}, 2 threads): {d['seconds']:.1f}s (read {d['read_seconds']:.1f}s)  "
            f"auc {d['val_auc']}  ratio {d['seconds'] / plain['seconds']:.2f}× {d['error'] or ''}",
            flush=True,
        )
    if wanted & {"hpo", "fault"}:
        data = load_arrays(table, features)
    if "hpo" in wanted:
        for scheduler in ("fifo", "asha"):
            results[f"hpo_{scheduler}"] = r = hpo(data, args.rounds, storage, scheduler)
            print(
                f"HPO {scheduler}: best auc {r['best_val_auc']:.4f}, trial-seconds {r['trial_seconds']:.0f}, "
                f"wall {r['wall_seconds']:.0f}s, rounds per trial {r['rounds']}",
                flush=True,
            )
        f, a = results["hpo_fifo"], results["hpo_asha"]
        print(
            f"ASHA vs full budget: Δauc {a['best_val_auc'] - f['best_val_auc']:+.4f}, trial-seconds "
            f"{a['trial_seconds'] / f['trial_seconds']:.0%} of full; same 16 configs: {a['configs'] == f['configs']}"
        )
    if "fault" in wanted:
        results["fault"] = r = fault(data, args.rounds, storage)
        print(
            f"fault: killed pid {r['killed'].get('pid')} after {r['killed'].get('after')}; {r['finished']}/4 trials "
            f"finished in {r['seconds']:.0f}s; errors {r['errors']}"
        )
        for t in r["trials"]:
            print(f"  {t['trial']}  reports at rounds {t['reports']}")
    ray.shutdown()
    print(f"written to {save('train', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
