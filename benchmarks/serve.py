"""Serving benchmark: single-row predict requests under wrk, mlplatform against the usual ways, one run.

    python benchmarks/serve.py [--duration 20] [--warmup 5] [--conns 16,64] [--only a,b,c,d,e]

Every variant serves the same XGBoost booster (11 features, 100 trees of depth 6) on 127.0.0.1:

  a   bare FastAPI + uvicorn, one process, body parsed as a dict, `inplace_predict`
  a2  the same with as many uvicorn workers as the fast mlplatform endpoint uses router processes
  b   `mlflow models serve` of the same model (one worker)
  c   a one-deployment Ray Serve app (FastAPI ingress, `inplace_predict`)
  d   mlplatform: router + one deployment per version, 90/10 split
  e   mlplatform: like d with sticky routing (header) and a 100 % shadow
  cF, dF, eF   c, d, e on a platform started with the default HAProxy ingress (the others: `up --classic-serving`)
  c2F the one-deployment app with 2 replicas, HAProxy
  dC  mlplatform 90/10 with versions colocated in 2 router replicas, HAProxy (what `make demo` serves)
  dL, dCL   d and dC with the inference log on at 100 % sampling (its cost: compare with d and dC)
  eC  dC with sticky routing (header) and a 100 % shadow (their cost on the fast path: compare with dC)

wrk runs with 2 threads (1 at c=1) for `duration` seconds per concurrency after a `warmup`. Results are printed as a
table (RPS, p50, p99, non-2xx, ratio to a) and written to benchmarks/results/serve-<date>.json.
Needs `wrk` (apt-get install wrk) and the project installed (`make install-dev`). Uses ports 8000, 8265,
5000, 8100-8102 and a temporary MLPLATFORM_HOME; run `make down` first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import requests
from _record import save

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FEATURES = [f"f{i}" for i in range(11)]
ROW = {f: round(float(v), 3) for f, v in zip(FEATURES, np.random.default_rng(1).normal(10, 5, 11), strict=True)}
BODY = json.dumps({"instances": [ROW]})


def train_booster(path: Path, seed: int) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(10, 5, size=(20000, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + x[:, 3] - x[:, 7] + rng.normal(0, 3, len(x)) > 10).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 6, "tree_method": "hist", "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=FEATURES),
        num_boost_round=100,
    )
    booster.save_model(str(path))


# ------------------------------------------------------------------------------------------ wrk


def wrk(url: str, conns: int, duration: int, *, sticky: bool = False) -> dict:
    lua = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
    if sticky:
        lua += textwrap.dedent(
            """
            request = function()
              wrk.headers["x-user-id"] = tostring(math.random(1, 100000))
              return wrk.format(nil)
            end
            """
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    out = subprocess.run(
        ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    os.unlink(f.name)

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def measure(name: str, url: str, args: argparse.Namespace, results: dict, *, sticky: bool = False) -> None:
    k = 2
    while name in results:  # a repeat of a variant: dC, dC#2, ...
        name, k = f"{name.split('#')[0]}#{k}", k + 1
    check = requests.post(url, data=BODY, headers={"Content-Type": "application/json"}, timeout=30)
    if check.status_code != 200:
        raise RuntimeError(f"{name}: {url} answered {check.status_code}: {check.text[:300]}")
    wrk(url, 16, args.warmup, sticky=sticky)
    for c in args.conns:
        r = wrk(url, c, args.duration, sticky=sticky)
        results.setdefault(name, {})[str(c)] = r
        print(
            f"  {name:<4} c={c:<3} {r['rps']:8.0f} rps  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
            f"non-2xx {r['non_2xx']}",
            flush=True,
        )


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise RuntimeError(f"nothing answers at {url}")


def start(cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
    # `mlflow models serve` runs `uvicorn` from PATH: make it this environment's.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------- variants

FASTAPI_APP = """
import json, numpy as np, xgboost as xgb
from fastapi import FastAPI, Request
from fastapi.responses import Response
booster = xgb.Booster(); booster.load_model({model!r}); booster.set_param({{"nthread": 1}})
FEATURES = {features!r}
app = FastAPI()
@app.post("/v1/models/bench:predict")
async def predict(request: Request):
    doc = json.loads(await request.body())
    x = np.array([[row[f] for f in FEATURES] for row in doc["instances"]], dtype=np.float32)
    return Response(json.dumps({{"predictions": booster.inplace_predict(x).tolist(), "model_version": "1"}}),
                    media_type="application/json", headers={{"x-model-version": "1"}})
"""

SERVE_ONE = """
import numpy as np, xgboost as xgb, json
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
FEATURES = {features!r}
api = FastAPI()
@serve.deployment(ray_actor_options={{"num_cpus": 0.5}}, max_ongoing_requests=256)
@serve.ingress(api)
class One:
    def __init__(self):
        self.booster = xgb.Booster(); self.booster.load_model({model!r}); self.booster.set_param({{"nthread": 1}})
    @api.post("/v1/models/bench:predict")
    async def predict(self, request: Request):
        doc = json.loads(await request.body())
        x = np.array([[row[f] for f in FEATURES] for row in doc["instances"]], dtype=np.float32)
        return JSONResponse({{"predictions": self.booster.inplace_predict(x).tolist(), "model_version": "1"}})
app = One.bind()
"""


def bench_fastapi(workdir: Path, model: Path, workers: int, name: str, args, results) -> None:
    (workdir / "fastapi_app.py").write_text(FASTAPI_APP.format(model=str(model), features=FEATURES))
    proc = start(
        [
            str(BIN / "uvicorn"),
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "8100",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=workdir,
    )
    try:
        wait_http("http://127.0.0.1:8100/docs")
        measure(name, "http://127.0.0.1:8100/v1/models/bench:predict", args, results)
    finally:
        stop(proc)


def bench_mlflow_serve(workdir: Path, model: Path, args, results) -> None:
    import mlflow.xgboost
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model))
    path = workdir / "mlflow_model"
    shutil.rmtree(path, ignore_errors=True)
    mlflow.xgboost.save_model(booster, str(path), model_format="ubj")
    proc = start(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(path),
            "--env-manager",
            "local",
            "-p",
            "8101",
            "-h",
            "127.0.0.1",
            "-w",
            "1",
        ],
    )
    try:
        wait_http("http://127.0.0.1:8101/ping", timeout=180)
        # mlflow's scoring protocol takes dataframe_records, not instances of the same shape.
        global BODY
        saved, BODY = BODY, json.dumps({"dataframe_records": [ROW]})
        try:
            measure("b", "http://127.0.0.1:8101/invocations", args, results)
        finally:
            BODY = saved
    finally:
        stop(proc)


def platform(home: Path, fast: bool) -> dict:
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(
        [str(BIN / "mlplatform"), "up", *([] if fast else ["--classic-serving"])],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return env


def register(env: dict, models: list[Path]) -> None:
    code = textwrap.dedent(
        f"""
        import mlflow, mlflow.xgboost, xgboost as xgb, pandas as pd
        from mlflow.models import infer_signature
        mlflow.set_tracking_uri("http://127.0.0.1:5000")
        mlflow.set_experiment("bench")
        for path in {[str(m) for m in models]!r}:
            b = xgb.Booster(); b.load_model(path)
            ex = pd.DataFrame([{ROW!r}])
            with mlflow.start_run():
                mlflow.xgboost.log_model(b, name="model", model_format="ubj", registered_model_name="bench",
                                         signature=infer_signature(ex, b.inplace_predict(ex.to_numpy("float32"))))
        """
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


#: Every Serve app in the benchmark: no per-request access log line (the FastAPI baselines log none either).
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


def serve_config(path: Path, *, sticky: bool, shadow: bool, colocate: bool, log: bool = False) -> Path:
    versions = [{"version": "1", "weight": 90, "num_cpus": 0.3}, {"version": "2", "weight": 10, "num_cpus": 0.3}]
    if shadow:
        versions = [
            {"version": "1", "weight": 100, "num_cpus": 0.3},
            {"version": "2", "weight": 0, "num_cpus": 0.3, "shadow": True},
        ]
    args = {"model_name": "bench", "auth": "none", "versions": versions, "ingress_num_cpus": 0.3}
    if sticky:
        args["sticky"] = {"header": "x-user-id"}
    if colocate:
        args |= {"colocate": True, "ingress_num_replicas": 2, "ingress_num_cpus": 0.5}
    if log:
        args["inference_log"] = {"sample_rate": 1.0}
    config = {
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {"name": "bench", "route_prefix": "/", "import_path": "mlplatform.release.app:build_app", "args": args}
        ],
    }
    path.write_text(json.dumps(config))
    return path


def deploy(env: dict, config: Path) -> None:
    code = f"from mlplatform.release.deploy import deploy; deploy({str(config)!r})"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])


def serve_one(env: dict, workdir: Path, model: Path, replicas: int = 1) -> None:
    (workdir / "serve_one.py").write_text(SERVE_ONE.format(model=str(model), features=FEATURES))
    cfg = workdir / "serve_one.yaml"
    cfg.write_text(
        json.dumps(
            {
                "http_options": {"host": "127.0.0.1", "port": 8000},
                "applications": [
                    {
                        "name": "one",
                        "route_prefix": "/",
                        "import_path": "serve_one:app",
                        "runtime_env": {"working_dir": f"local://{workdir}"},
                    }
                ],
            }
        )
    )
    out = subprocess.run(
        [str(BIN / "serve"), "deploy", str(cfg), "-a", "http://127.0.0.1:8265"],
        env={**env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.post("http://127.0.0.1:8000/v1/models/bench:predict", data=BODY, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError("one-deployment app never answered")


def delete_apps(env: dict) -> None:
    subprocess.run(
        [str(BIN / "serve"), "shutdown", "-y", "-a", "http://127.0.0.1:8265"],
        env={**env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
    )
    time.sleep(3)


#: variant → rows its inference log held after the run (the L variants).
LOGGED: dict[str, int] = {}


def logged_rows(home: Path) -> int:
    """Rows the inference log holds (written by the last flush, 5 s at most after the load)."""
    import pyarrow.dataset as pads

    time.sleep(6)
    root = home / "inference_log" / "requests"
    rows = pads.dataset(root, format="parquet").count_rows() if root.exists() else 0
    shutil.rmtree(root, ignore_errors=True)  # the next variant counts its own
    print(f"   inference log: {rows} rows written", flush=True)
    return rows


def bench_platform(fast: bool, workdir: Path, models: list[Path], wanted: list[str], args, results) -> None:
    mine = {"c", "d", "dL", "e"} if not fast else {"cF", "c2F", "dF", "eF", "dC", "dCL", "eC"}
    # In the order of --only, repeats included (e.g. dC,dCL,dCL,dC: an ABBA pair evens out drift over time).
    variants = [v for v in wanted if v in mine]
    if not variants:
        return
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    env = platform(home, fast)
    url = "http://127.0.0.1:8000/v1/models/bench:predict"
    try:
        register(env, models)
        for v in variants:
            delete_apps(env)
            if v.startswith("c"):
                serve_one(env, workdir, models[0], replicas=2 if v == "c2F" else 1)
            else:
                deploy(
                    env,
                    serve_config(
                        workdir / f"{v}.json",
                        sticky=v.startswith("e"),
                        shadow=v.startswith("e"),
                        colocate=v.startswith("dC") or v == "eC",
                        log=v.endswith("L"),
                    ),
                )
            measure(v, url, args, results, sticky=v.startswith("e"))
            if v.endswith("L"):
                LOGGED[f"{v}#{len(LOGGED) + 1}"] = logged_rows(home)
    finally:
        subprocess.run([str(BIN / "mlplatform"), "down"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--conns", default="16,64")
    p.add_argument("--only", default="a,a2,b,c,d,dL,e,cF,dF,eF,dC,dCL")
    args = p.parse_args()
    args.conns = [int(c) for c in args.conns.split(",")]
    wanted = args.only.split(",")
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    models = [workdir / "v1.ubj", workdir / "v2.ubj"]
    for seed, path in enumerate(models):
        train_booster(path, seed)
    results: dict = {}
    print(
        f"wrk -t2, {args.duration}s per concurrency {args.conns} after {args.warmup}s warm-up; {os.cpu_count()} CPUs",
        flush=True,
    )
    if "a" in wanted:
        bench_fastapi(workdir, models[0], 1, "a", args, results)
    if "a2" in wanted:
        bench_fastapi(workdir, models[0], 2, "a2", args, results)
    if "b" in wanted:
        bench_mlflow_serve(workdir, models[0], args, results)
    bench_platform(False, workdir, models, wanted, args, results)
    bench_platform(True, workdir, models, wanted, args, results)

    print("\nvariant  conns      RPS   p50 ms   p99 ms  non-2xx  ×a(same c)")
    for name, by_c in results.items():
        for c, r in by_c.items():
            base = results.get("a", {}).get(c, {}).get("rps")
            ratio = f"{r['rps'] / base:.2f}" if base else "-"
            print(
                f"{name:<8} {c:>5} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8} {ratio:>10}"
            )
    out = save("serve", {"args": vars(args), "cpus": os.cpu_count(), "results": results, "inference_log_rows": LOGGED})
    print(f"\nwritten to {out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
