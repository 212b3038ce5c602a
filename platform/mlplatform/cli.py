"""The `mlplatform` command: local platform lifecycle, jobs, and a look at the live endpoint."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlplatform.errors import ConfigError, PlatformError


def _cmd_up(a: argparse.Namespace) -> int:
    from mlplatform import cluster

    s = cluster.up(ray_port=a.ray_port, dashboard_port=a.dashboard_port, mlflow_port=a.mlflow_port, num_cpus=a.num_cpus)
    print(f"platform up in {s.home}\n  Ray dashboard + Jobs API: {s.dashboard_url}\n  MLflow UI: {s.mlflow_url}")
    return 0


def _cmd_down(a: argparse.Namespace) -> int:
    from mlplatform import cluster

    print("platform stopped" if cluster.down() else "nothing was running")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    from mlplatform import cluster

    for k, v in cluster.status().items():
        print(f"{k:22} {v}")
    return 0


def _cmd_submit(a: argparse.Namespace) -> int:
    from mlplatform.jobs import submit

    return submit(a.job, a.config, a.address, wait=not a.no_wait)


def _cmd_run(a: argparse.Namespace) -> int:
    from mlplatform.jobs import run_local

    return run_local(a.job, a.config)


def _cmd_data(a: argparse.Namespace) -> int:
    from mlplatform.datasets import generate
    from mlplatform.settings import platform_home

    out = Path(a.out) if a.out else platform_home() / "data" / "demo"
    counts = generate(out, entities=a.entities, seed=a.seed)
    print(f"sample data in {out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_endpoint(a: argparse.Namespace) -> int:
    import requests

    from mlplatform import cluster
    from mlplatform.deploy import curl_line

    state = cluster.load_state()
    base = a.url or (state.serve_url if state else "http://127.0.0.1:8000")
    key = os.environ.get("MLPLATFORM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        status = requests.get(f"{base}/v1/models/{a.model}", headers=headers, timeout=5)
        meta = requests.get(f"{base}/v2/models/{a.model}", headers=headers, timeout=5)
    except requests.RequestException as exc:
        raise PlatformError(f"no endpoint answers at {base}: {exc}") from None
    if status.status_code != 200 or meta.status_code != 200:
        raise PlatformError(f"{base}: model {a.model!r} is not served ({status.status_code}: {status.text[:200]})")
    weights = status.json().get("versions", {})
    features = [i["name"] for i in meta.json()["inputs"]]
    print(
        f"endpoint   {base}/v1/models/{a.model}:predict   (Open Inference Protocol: {base}/v2/models/{a.model}/infer)"
    )
    print("versions   " + "  ".join(f"v{v}={w:g}%" for v, w in weights.items()))
    print(f"try        {curl_line(base, a.model, features, with_key=bool(key))}")
    if state:
        print(f"Ray        {state.dashboard_url}\nMLflow     {state.mlflow_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="start the local Ray head and MLflow server (harmless if already up)")
    s.add_argument("--ray-port", type=int, default=6379)
    s.add_argument("--dashboard-port", type=int, default=8265)
    s.add_argument("--mlflow-port", type=int, default=5000)
    s.add_argument("--num-cpus", type=int, default=None)
    s.set_defaults(fn=_cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(fn=_cmd_down)
    sub.add_parser("status", help="what runs where").set_defaults(fn=_cmd_status)

    for name, fn, text in (
        ("submit", _cmd_submit, "submit a job to a Ray cluster's Jobs API"),
        ("run", _cmd_run, "run a job in this process on an embedded local Ray"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("job", choices=["ingest", "train", "deploy", "pipeline"])
        s.add_argument("--config", required=True)
        if name == "submit":
            s.add_argument("--address", default=None, help="Jobs API URL (default: the local platform)")
            s.add_argument("--no-wait", action="store_true", help="return once submitted")
        s.set_defaults(fn=fn)

    s = sub.add_parser("data", help="generate the sample data (four heterogeneous sources)")
    s.add_argument("--out", default=None, help="folder (default: $MLPLATFORM_HOME/data/demo)")
    s.add_argument("--entities", type=int, default=5000)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_data)

    s = sub.add_parser("endpoint", help="show a served model's URL, versions, weights and a curl line")
    s.add_argument("model")
    s.add_argument("--url", default=None, help="Serve HTTP address (default: the local platform's)")
    s.set_defaults(fn=_cmd_endpoint)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
