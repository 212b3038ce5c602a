"""The `make demo` endpoint as a user gets it, against the usual ways of serving the same booster, one run.

    python benchmarks/serve_demo.py [--duration 15] [--warmup 5] [--conns 1,16,64] [--entities 5000]

Runs what `make demo` runs in a temporary MLPLATFORM_HOME (`mlplatform up`, `mlplatform data`, the demo
pipeline with serve_configs/demo.yaml as it is: versions colocated in two router replicas behind Serve's
HAProxy ingress, the inference log at 100 %, access logs on), then sends the printed curl line's request (raw
values, `"plan": "basic"`) under wrk. Then the platform goes down and the champion's booster, taken from the
registry, is served by:

  fastapi    bare FastAPI + uvicorn, one process: JSON body → plan looked up in the categories → inplace_predict
  fastapi2   the same with two uvicorn workers (as many processes as the demo's router replicas)
  mlflow     `mlflow models serve` of the booster (one worker; `dataframe_records`, plan as its code)

Every booster predicts on one thread. Results: a table with ratios to `fastapi` and
benchmarks/results/serve_demo-<date>.json. Needs wrk (apt-get install wrk); uses ports 8000, 8265, 5000, 8100,
8101: run `make down` first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import serve as bench
from _record import save

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
URL = "http://127.0.0.1:8000/v1/models/churn:predict"

FASTAPI_APP = """
import json, math, numpy as np, xgboost as xgb
from fastapi import FastAPI, Request
from fastapi.responses import Response
booster = xgb.Booster(); booster.load_model({model!r}); booster.set_param({{"nthread": 1}})
FEATURES = {features!r}
CODES = {codes!r}
app = FastAPI()

def value(f, v):
    if v is None:
        return math.nan
    return CODES[f][v] if f in CODES else v

@app.post("/v1/models/churn:predict")
async def predict(request: Request):
    doc = json.loads(await request.body())
    x = np.array([[value(f, row[f]) for f in FEATURES] for row in doc["instances"]], dtype=np.float32)
    return Response(json.dumps({{"predictions": booster.inplace_predict(x).tolist(), "model_version": "1"}}),
                    media_type="application/json", headers={{"x-model-version": "1"}})
"""


def cli(env: dict, *args: str) -> str:
    out = subprocess.run([str(BIN / "mlplatform"), *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"mlplatform {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--conns", default="1,16,64")
    p.add_argument("--entities", type=int, default=5000)
    args = p.parse_args()
    args.conns = [int(c) for c in args.conns.split(",")]
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-demo-work-"))
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    results: dict = {}
    try:
        cli(env, "up")
        cli(env, "data", "--entities", str(args.entities))
        cli(env, "submit", "pipeline", "--config", "jobs/configs/demo.yaml")
        meta = requests.get("http://127.0.0.1:8000/v2/models/churn", timeout=10).json()
        from mlplatform.serve.protocol import categories_of, example_row

        row = example_row(meta)  # the printed curl line's instance
        features = [i["name"] for i in meta["inputs"]]
        codes = {f: {v: i for i, v in enumerate(values)} for f, values in categories_of(meta).items()}
        bench.BODY = json.dumps({"instances": [row]})
        print(f"wrk, {args.duration}s per concurrency {args.conns} after {args.warmup}s warm-up; {os.cpu_count()} CPUs")
        print(f"request: {bench.BODY}", flush=True)
        bench.measure("demo", URL, args, results)

        from mlplatform.cluster import load_state
        from mlplatform.registry import load_booster, model_uri, resolve_version

        state = load_state(home)
        version = resolve_version("churn", None, "champion", tracking_uri=state.mlflow_url)
        booster = load_booster(model_uri("churn", version), state.mlflow_url)
        model = workdir / "champion.ubj"
        booster.save_model(str(model))
    finally:
        subprocess.run([str(BIN / "mlplatform"), "down"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)

    (workdir / "fastapi_app.py").write_text(FASTAPI_APP.format(model=str(model), features=features, codes=codes))
    for name, workers in (("fastapi", 1), ("fastapi2", 2)):
        proc = bench.start(
            [str(BIN / "uvicorn"), "fastapi_app:app", "--host", "127.0.0.1", "--port", "8100", "--workers",
             str(workers), "--log-level", "warning", "--no-access-log"],
            cwd=workdir,
        )  # fmt: skip
        try:
            bench.wait_http("http://127.0.0.1:8100/docs")
            bench.measure(name, "http://127.0.0.1:8100/v1/models/churn:predict", args, results)
        finally:
            bench.stop(proc)

    import mlflow.xgboost

    path = workdir / "mlflow_model"
    mlflow.xgboost.save_model(booster, str(path), model_format="ubj")
    proc = bench.start(
        [str(BIN / "mlflow"), "models", "serve", "-m", str(path), "--env-manager", "local", "-p", "8101",
         "-h", "127.0.0.1", "-w", "1"]
    )  # fmt: skip
    try:
        bench.wait_http("http://127.0.0.1:8101/ping", timeout=180)
        # mlflow's scoring protocol: dataframe_records, the model's own inputs (plan as its code, NaN as null).
        encoded = {f: codes[f][v] if f in codes else v for f, v in row.items()}
        bench.BODY = json.dumps({"dataframe_records": [encoded]})
        bench.measure("mlflow", "http://127.0.0.1:8101/invocations", args, results)
    finally:
        bench.stop(proc)
    shutil.rmtree(workdir, ignore_errors=True)

    print("\nvariant   conns      RPS   p50 ms   p99 ms  non-2xx  ×fastapi  demo×")
    for name, by_c in results.items():
        for c, r in by_c.items():
            base = results.get("fastapi", {}).get(c, {}).get("rps")
            demo = results.get("demo", {}).get(c, {}).get("rps")
            ratio = f"{r['rps'] / base:.2f}" if base else "-"
            mine = f"{demo / r['rps']:.2f}" if demo and r["rps"] and not math.isnan(r["rps"]) else "-"
            print(
                f"{name:<9} {c:>5} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8} "
                f"{ratio:>9} {mine:>6}"
            )
    out = save("serve_demo", {"args": vars(args), "cpus": os.cpu_count(), "results": results})
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
