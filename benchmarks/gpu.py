"""GPU check: the demo's table trained on CPU and on an NVIDIA GPU with the parameters training uses, and a
1 M-row table to show where the GPU pays off.

    python benchmarks/gpu.py --prepare DIR                                  # here: ingest + split (Ray)
    python benchmarks/gpu.py --prepared DIR [--rows 1000000] [--out FILE]   # there: CPU vs GPU fits

The second runs on a machine with an NVIDIA GPU and XGBoost, without Ray or MLflow (the lent GPU machines have
neither, nor a network to fetch them): DIR holds what the first wrote from a real ingest and the real trainer —
`demo.npz` (the demo's 5 000 customers, split by key hash as training splits them) and `params.json` (the
demo config's params, and the same with `train.gpus_per_trial: 1` as `search.device_params` turns it into
XGBoost's `device: cuda`). Each fit is timed with the DMatrix build included; AUC on the held-out rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by ranks (ties averaged), without scikit-learn."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit(params: dict, rounds: int, x_train, y_train, x_val, y_val) -> dict:
    import xgboost as xgb

    started = time.perf_counter()
    dtrain = xgb.DMatrix(x_train, label=y_train)
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    seconds = time.perf_counter() - started
    scores = booster.inplace_predict(x_val)
    return {"seconds": round(seconds, 3), "auc": round(auc(np.asarray(y_val), np.asarray(scores)), 5)}


def synthetic(rows: int, features: int = 28, seed: int = 0):
    """A HIGGS-like table (as benchmarks/train.py makes): float features, a non-linear label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    logit = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.5 * x[:, 3] ** 2 - 0.5 + 0.3 * x[:, 4:8].sum(axis=1)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut = int(rows * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def prepare(out: Path) -> None:
    """Ingest the demo's sample data (5 000 customers) and split it as training does; the params of the demo
    config on CPU and with `gpus_per_trial: 1`."""
    import tempfile

    import ray
    from mlplatform.config import load_config
    from mlplatform.data.ingest import ingest
    from mlplatform.pipeline import PipelineConfig
    from mlplatform.tools.sample_data import generate
    from mlplatform.train.search import device_params, load_training_data

    root = Path(__file__).resolve().parents[1]
    home = Path(tempfile.mkdtemp())
    os.environ["MLPLATFORM_HOME"] = str(home)  # the demo config's paths
    generate(home / "data" / "demo", entities=5000)
    cfg = load_config(root / "jobs" / "configs" / "demo.yaml", PipelineConfig)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    version = ingest(cfg.data.model_copy(update={"output_dir": str(home / "datasets")}))
    data = load_training_data(version)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "demo.npz", x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val)
    # The search space's middle, fixed: one fit per device, not a search.
    params = {
        **cfg.train.params,
        **data.task.params(cfg.train.params),
        **{"max_depth": 6, "eta": 0.1, "subsample": 0.8, "min_child_weight": 5, "seed": cfg.train.seed},
        "eval_metric": ["auc"],
    }
    gpu = {**params, **device_params(cfg.train.model_copy(update={"gpus_per_trial": 1.0}))}
    spec = {"cpu": params, "gpu": gpu, "rounds": cfg.train.num_boost_round, "rows": version.manifest["rows"]}
    (out / "params.json").write_text(json.dumps(spec, indent=1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prepare", type=Path, help="write DIR here (needs Ray and this package)")
    p.add_argument("--prepared", type=Path)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    spec = json.loads((args.prepared / "params.json").read_text())
    demo = np.load(args.prepared / "demo.npz")
    import xgboost as xgb

    card = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    result = {"date": time.strftime("%Y-%m-%d"), "card": card, "xgboost": xgb.__version__, "params": spec["gpu"]}
    data = (demo["x_train"], demo["y_train"], demo["x_val"], demo["y_val"])
    fit(spec["gpu"], 5, *data)  # CUDA context and kernels loaded once, not inside a timed fit
    result["demo"] = {
        "rows": spec["rows"],
        "rounds": spec["rounds"],
        "cpu": fit(spec["cpu"], spec["rounds"], *data),
        "gpu": fit(spec["gpu"], spec["rounds"], *data),
    }
    big = synthetic(args.rows)
    params = {**spec["cpu"], "max_depth": 8, "eta": 0.1}
    result["synthetic"] = {
        "rows": args.rows,
        "features": 28,
        "rounds": 200,
        "cpu": fit(params, 200, *big),
        "gpu": fit({**params, "device": "cuda"}, 200, *big),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
