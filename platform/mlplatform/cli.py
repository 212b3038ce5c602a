"""The `mlplatform` command: local platform lifecycle, jobs, traffic, and a look at the live endpoint.

Errors: a `PlatformError` (anything that is the user's to fix) is printed as one line, exit 2 for a bad config
or argument and 1 otherwise; an error from a library below us is printed as one line too, naming the
library; anything else is a bug and says so. ``--debug`` shows the traceback in every case.

Each command imports the layers it needs when it runs: the whole package with Ray Serve, MLflow and XGBoost
takes ≈ 3.2 s to import on the 2-core CI machine, while `mlplatform --help`, `status` or `down` take ≈ 0.3 s
(measured 2026-11-27). This module is the one place where our imports are deferred, for that reason.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mlplatform import cluster
from mlplatform.config import validation_problems
from mlplatform.errors import ConfigError, PlatformError, PlatformNotRunningError
from mlplatform.serve.policy import normalize_version
from mlplatform.serve.protocol import categories_of, curl_line, example_row
from mlplatform.settings import MLPLATFORM_API_KEYS, platform_home
from mlplatform.xgb import own_process

__all__ = ["main", "build_parser"]

#: Exit status of a bug in mlplatform (sysexits' EX_SOFTWARE), as opposed to 1/2 for what the user can fix.
EXIT_BUG = 70


def _client_headers() -> dict[str, str]:
    """The Authorization header an inference client sends: the first of $MLPLATFORM_API_KEYS, if any."""
    keys = MLPLATFORM_API_KEYS.get()
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}


def _serve_url(url: str | None) -> str:
    state = cluster.load_state()
    return url or (state.serve_url if state else "http://127.0.0.1:8000")


def _model_metadata(base: str, model: str, headers: dict[str, str]) -> dict[str, Any]:
    """The V2 metadata the endpoint at `base` declares for `model`: its inputs, their types and categories."""
    import requests

    try:
        meta = requests.get(f"{base}/v2/models/{model}", headers=headers, timeout=5)
    except requests.RequestException as exc:
        raise PlatformNotRunningError(f"no endpoint answers at {base}: {exc}") from None
    if meta.status_code != 200:
        raise PlatformError(f"{base}: model {model!r} is not served ({meta.status_code}: {meta.text[:200]})")
    return meta.json()


def _control(address: str | None) -> Any:
    from mlplatform.release.serve_api import ServeAdmin
    from mlplatform.release.traffic import TrafficControl

    return TrafficControl(ServeAdmin(address))


# -------------------------------------------------------------------------------------------- commands


def _cmd_up(a: argparse.Namespace) -> int:
    s = cluster.up(
        ray_port=a.ray_port,
        dashboard_port=a.dashboard_port,
        mlflow_port=a.mlflow_port,
        num_cpus=a.num_cpus,
        fast_serving=not a.classic_serving,
    )
    print(f"platform up in {s.home}\n  Ray dashboard + Jobs API: {s.dashboard_url}\n  MLflow UI: {s.mlflow_url}")
    return 0


def _cmd_down(a: argparse.Namespace) -> int:
    print("platform stopped" if cluster.down() else "nothing was running")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    for k, v in cluster.status().items():
        print(f"{k:22} {v}")
    return 0


def _cmd_submit(a: argparse.Namespace) -> int:
    from mlplatform.launch import submit

    return submit(a.job, a.config, a.address, wait=not a.no_wait, resume=a.resume, timeout=a.timeout)


def _cmd_run(a: argparse.Namespace) -> int:
    from mlplatform.launch import run_local

    return run_local(a.job, a.config, resume=a.resume)


def _cmd_predict(a: argparse.Namespace) -> int:
    from mlplatform.launch import submit
    from mlplatform.serve.batch import absolute, parse_model_ref

    parse_model_ref(a.model)  # a malformed reference fails here, before anything is submitted
    args = ["--model", a.model, "--input", absolute(a.input), "--out", absolute(a.out)]
    args += ["--key", a.key] if a.key else []
    args += ["--concurrency", str(a.concurrency)] if a.concurrency else []
    args += ["--cpus-per-actor", str(a.cpus_per_actor)] if a.cpus_per_actor else []
    args += ["--gpus-per-actor", str(a.gpus_per_actor)] if a.gpus_per_actor else []
    args += ["--distributed"] if a.distributed else []
    return submit("predict", None, a.address, wait=not a.no_wait, job_args=args)


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from mlplatform.serve.batch import parse_model_ref
    from mlplatform.train.reproduce import reproduce

    ref = parse_model_ref(a.model)
    r = reproduce(ref.name, ref.version, ref.alias)
    print(f"{r.model} v{r.version} ({r.task}, {r.rounds} rounds) retrained on {r.dataset} in {r.seconds:.1f}s")
    print(r.table())
    print(f"same booster, tree for tree: {'yes' if r.identical else 'no'}")
    if r.commit != r.commit_now:
        print(f"code: trained at commit {r.commit[:12]}, this is {r.commit_now[:12]} (check it out to rerun that code)")
    for note in r.notes:
        print(f"note: {note}")
    return 0 if r.identical or r.notes else 1


def _cmd_jobs(a: argparse.Namespace) -> int:
    from mlplatform.launch import job_logs, list_jobs, stop_job

    if a.action == "list":
        rows = list_jobs(a.address, limit=a.limit)
        if not rows:
            print("no jobs")
        for r in rows:
            print(f"{r['id']:<48} {r['status']:<9} {r['started']}  {r['seconds']:>8.1f}s  {r['entrypoint'][:70]}")
            if r["message"] and r["status"] in ("FAILED", "STOPPED"):
                print(f"{'':<48} {r['message'][:120]}")
        return 0
    if a.action == "logs":
        status = job_logs(a.id, a.address, follow=a.follow)
        print(f"\n-- job {a.id}: {status}", file=sys.stderr)
        return 0
    print(f"job {a.id}: {stop_job(a.id, a.address)}")
    return 0


def _cmd_data(a: argparse.Namespace) -> int:
    from mlplatform.tools.sample_data import generate

    out = Path(a.out) if a.out else platform_home() / "data" / "demo"
    if a.shift < 0:
        raise ConfigError(f"--shift must be ≥ 0, got {a.shift:g}")
    counts = generate(out, entities=a.entities, seed=a.seed, shift=a.shift, flip_labels=a.flip_labels)
    print(f"sample data in {out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _cmd_endpoint(a: argparse.Namespace) -> int:
    import requests

    base = _serve_url(a.url)
    headers = _client_headers()
    meta = _model_metadata(base, a.model, headers)
    try:
        weights = requests.get(f"{base}/v1/models/{a.model}", headers=headers, timeout=5).json().get("versions", {})
    except (requests.RequestException, ValueError):
        weights = {}  # the split is a nice-to-have here; the metadata above proved the endpoint serves
    print(
        f"endpoint   {base}/v1/models/{a.model}:predict   (Open Inference Protocol: {base}/v2/models/{a.model}/infer)"
    )
    print("versions   " + "  ".join(f"v{v}={w:g}%" for v, w in weights.items()))
    print(f"try        {curl_line(base, a.model, example_row(meta), with_key=bool(headers))}")
    state = cluster.load_state()
    if state:
        print(f"Ray        {state.dashboard_url}\nMLflow     {state.mlflow_url}")
    return 0


def _parse_weights(pairs: list[str]) -> dict[str, float]:
    """VERSION=PERCENT pairs (v2=90, 2=90) → {"2": 90.0}."""
    weights: dict[str, float] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        try:
            weights[str(normalize_version(version))] = float(weight)
        except ValueError:
            sep = ""
        if not sep or not version.strip():
            raise ConfigError(f"traffic: {pair!r} is not VERSION=PERCENT (e.g. v2=90)")
    return weights


def _print_event(e: Any) -> None:
    shadow = f"  shadow v{e.shadow['version']} {e.shadow.get('percent', 100):g}%" if e.shadow else ""
    faults = "".join(f"  fault v{v} {f['abort_percent']:g}%" for v, f in (e.faults or {}).items())
    weights = "  ".join(f"v{v}={w:g}%" for v, w in e.weights.items())
    aliases = " ".join(f"{a}=v{v}" for a, v in sorted((e.aliases or {}).items()))
    status = "" if e.status == "applied" else f"  [{e.status}]"
    print(f"#{e.seq:<3} {e.at}  {e.action:<16} {weights}{shadow}{faults}  [{aliases}]  by {e.by}  {e.reason}{status}")


def _cmd_traffic(a: argparse.Namespace) -> int:
    control = _control(a.address)
    if a.action == "show":
        app = control.served(a.app)
        p = app.policy
        print(f"application {a.app!r} serving model {app.args.model_name!r} (router {app.router})")
        print("weights    " + "  ".join(f"v{v}={w:g}%" for v, w in p.weights.items()))
        shadow = f"v{p.shadow.version} {p.shadow.percent:g}% timeout {p.shadow.timeout_s:g}s" if p.shadow else "-"
        print(f"shadow     {shadow}")
        print(
            "faults     " + ("  ".join(f"v{v} {f.abort_percent:g}% → {f.status}" for v, f in p.faults.items()) or "-")
        )
        print(f"sticky     {app.args.sticky.model_dump(exclude_none=True) if app.args.sticky else '-'}")
        details = control.admin.app(a.app)
        print(f"status     {details.get('status')} {details.get('message') or ''}".rstrip())
        for dep_name, dep in sorted((details.get("deployments") or {}).items()):
            replicas = len(dep.get("replicas") or [])
            message = (dep.get("message") or "").strip().splitlines()
            print(f"  {dep_name:<24} {dep.get('status')}  {replicas} replica(s)  {message[0][:200] if message else ''}")
        return 0
    # Syntax first (a typo is a usage error, platform or not), then versions behind aliases.
    weights = _parse_weights(a.weights) if a.weights else None
    faults = {v: {"abort_percent": w} for pair in a.fault or [] for v, w in _parse_weights([pair]).items()}
    shadow: object = False
    if a.no_shadow:
        shadow = None
    elif a.shadow:
        version, _, percent = a.shadow.partition(":")
        try:
            shadow = {"version": str(normalize_version(version)), **({"percent": float(percent)} if percent else {})}
        except ValueError:
            raise ConfigError(f"traffic: --shadow {a.shadow!r} is not VERSION[:PERCENT] (e.g. v2:10)") from None
    served = control.served(a.app)

    def version_of(ref: str) -> str:
        # A version (3, v3) or a registry alias (champion, challenger): tours and runbooks then work whatever
        # numbers the registry has reached.
        return (
            ref
            if ref.isdigit()
            else control.resolve(served.args.model_name, ref, tracking_uri=served.args.tracking_uri)
        )

    if weights is not None:
        weights = {version_of(v): w for v, w in weights.items()}
    faults = {version_of(v): f for v, f in faults.items()}
    if isinstance(shadow, dict):
        shadow["version"] = version_of(shadow["version"])
    event = control.set_traffic(
        a.app, weights, shadow=shadow, faults=faults, clear_faults=a.clear_faults, reason=a.reason
    )
    _print_event(event)
    return 0


def _cmd_promote(a: argparse.Namespace) -> int:
    _print_event(_control(a.address).promote(a.app, a.version, reason=a.reason))
    return 0


def _cmd_rollback(a: argparse.Namespace) -> int:
    _print_event(_control(a.address).rollback(a.app, reason=a.reason))
    return 0


def _cmd_history(a: argparse.Namespace) -> int:
    control = _control(a.address)
    uri = None
    try:
        uri = control.served(a.app).args.tracking_uri
    except PlatformError:
        pass  # the app may be gone; its history is still in MLflow
    events = control.log(a.app, tracking_uri=uri)
    if not events:
        raise PlatformError(f"no deployment history for application {a.app!r}")
    for e in events[-a.last :] if a.last else events:
        _print_event(e)
    return 0


def _cmd_rollout(a: argparse.Namespace) -> int:
    import time

    control = _control(a.address)
    state = control.rollout(a.app)
    if a.action == "status":
        if state is None:
            ended = [e for e in control.log(a.app) if e.rollout and e.action.startswith("rollout-")]
            print(
                f"no rollout in progress in {a.app!r}"
                + (f"; the last one: #{ended[-1].seq} {ended[-1].action} {ended[-1].reason}" if ended else "")
            )
            return 0
        alive = "running" if state.alive(time.time()) else "STOPPED (its process is gone: resume or abort it)"
        print(
            f"{state.describe(time.time())}\n  started {state.started_at}; {alive}\n  steps {state.config.get('steps')}"
        )
        return 0
    if state is None:
        raise PlatformError(f"no rollout in progress in {a.app!r}")
    if a.action == "abort":
        _print_event(control.abort_rollout(a.app, reason=a.reason))
        return 0
    if state.alive(time.time()):
        raise PlatformError(f"{state.describe(time.time())}: it is still running; nothing to resume")
    from mlplatform.launch import submit

    return submit("rollout", None, a.address, resume_app=a.app)


def _cmd_drift(a: argparse.Namespace) -> int:
    import ray

    from mlplatform.config import load_config
    from mlplatform.monitor.config import DriftConfig, parse_duration
    from mlplatform.monitor.drift import drift, log_to_mlflow, write_outputs

    cfg = load_config(a.config, DriftConfig) if a.config else DriftConfig()
    model = None
    if a.model:
        name, _, version = a.model.partition("/")
        if not name or not version:
            raise ConfigError(f"--model is NAME/VERSION, e.g. churn/3; got {a.model!r}")
        model = (name, version.removeprefix("v"))
    since = parse_duration(a.since)
    ray.init(logging_level="WARNING", log_to_driver=False)  # joins the platform if it is up, else a local Ray
    current = a.current[0] if len(a.current) == 1 else a.current
    result = drift(a.reference, current, cfg, since=since, log_root=a.log_root, model=model)
    out = a.out or f"drift-{time.strftime('%Y%m%d-%H%M%S')}"
    files = write_outputs(result, out)
    v = result["verdict"]
    print(f"{result['current']['rows']} current rows vs {result['reference']['rows']} reference rows")
    for s in result["current"]["skipped"] + result["reference"].get("skipped", []):
        print(f"  skipped {s['path']}: {s['reason']}")
    rows = [
        [
            f,
            s["kind"],
            s.get("test", "-"),
            "-" if s.get("score") is None else f"{s['score']:.4g}",
            "DRIFT" if s["drifted"] else "",
        ]
        for f, s in list(result["features"].items())[:15]
    ]
    width = max(len(r[0]) for r in rows) if rows else 7
    for r in rows:
        print(f"  {r[0]:<{width}}  {r[1]:<11}  {r[2]:<4}  {r[3]:>9}  {r[4]}")
    verdict = {True: "DRIFTED", False: "no drift", None: "no verdict"}[v["drifted"]]
    print(f"{verdict}: {v['message']}")
    print(f"  {files[0]}\n  {files[1]}")
    if not a.no_mlflow:
        try:
            print(f"  MLflow run {log_to_mlflow(result, files)}")
        except PlatformError as exc:
            print(f"  not recorded in MLflow: {exc}")
    return 0


def _cmd_monitor(a: argparse.Namespace) -> int:
    from mlplatform.launch import submit

    return submit("monitor", a.config, a.address, wait=not a.no_wait, every=a.every, force=a.force)


def _cmd_load(a: argparse.Namespace) -> int:
    from mlplatform.tools.load import run_load

    base = _serve_url(a.url)
    headers = _client_headers()
    meta = _model_metadata(base, a.model, headers)
    features = [i["name"] for i in meta["inputs"]]
    rows = labels = None
    if a.dataset:
        from mlplatform.tools.load import dataset_rows

        rows, labels, where = dataset_rows(a.dataset, features)
        labels = labels if a.feedback else None
        print(f"rows from {where}{' with feedback (their labels)' if a.feedback else ''}")
    elif a.feedback:
        raise ConfigError("--feedback needs --dataset: the labels come from the rows sent")
    print(f"sending ~{a.rps:g} requests/s to {base}/v1/models/{a.model}:predict for {a.seconds:g}s", flush=True)
    report = run_load(
        base,
        a.model,
        features,
        rps=a.rps,
        seconds=a.seconds,
        headers=headers,
        rows=rows,
        labels=labels,
        categories=categories_of(meta),  # the rows hold the dataset's codes: sent as the raw values
    )
    print(report.summary())
    for e in report.errors[:3]:
        print(f"  e.g. {e}")
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplatform", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="start the local Ray head and MLflow server (harmless if already up)")
    s.add_argument("--ray-port", type=int, default=6379)
    s.add_argument("--dashboard-port", type=int, default=8265)
    s.add_argument("--mlflow-port", type=int, default=5000)
    s.add_argument("--num-cpus", type=int, default=None)
    s.add_argument(
        "--classic-serving",
        action="store_true",
        help="Serve's Python proxy instead of its HAProxy ingress and throughput settings (the default, "
        "several times faster; every Serve port stays on 127.0.0.1 either way)",
    )
    s.set_defaults(fn=_cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(fn=_cmd_down)
    sub.add_parser("status", help="what runs where").set_defaults(fn=_cmd_status)

    for name, fn, text, jobs in (
        (
            "submit",
            _cmd_submit,
            "submit a job to a Ray cluster's Jobs API",
            ["ingest", "train", "deploy", "pipeline", "rollout", "monitor"],
        ),
        (
            "run",
            _cmd_run,
            "run a job in this process on an embedded local Ray",
            ["ingest", "train", "deploy", "pipeline"],
        ),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("job", choices=jobs)
        s.add_argument("--config", required=True)
        s.add_argument("--resume", action="store_true", help="train/pipeline: finish the latest interrupted search")
        if name == "submit":
            s.add_argument("--address", default=None, help="Jobs API URL (default: the local platform)")
            s.add_argument("--no-wait", action="store_true", help="return once submitted")
            s.add_argument("--timeout", default=None, help="stop the job past DURATION (e.g. 2h): FAILED, exit 124")
        s.set_defaults(fn=fn)

    s = sub.add_parser("predict", help="batch scoring: every row of a CSV/Parquet file, Parquet out (a Ray job)")
    from mlplatform.launch import predict_arguments

    predict_arguments(s)
    s.add_argument("--address", default=None, help="Jobs API URL (default: the local platform)")
    s.add_argument("--no-wait", action="store_true", help="return once submitted")
    s.set_defaults(fn=_cmd_predict)

    s = sub.add_parser("reproduce", help="retrain a registered version from its records; metrics side by side")
    s.add_argument("model", help="NAME/VERSION (churn/3), NAME@ALIAS or NAME (its champion)")
    s.set_defaults(fn=_cmd_reproduce)

    s = sub.add_parser("jobs", help="the jobs of a cluster: list them, read or follow their logs, stop one")
    jsub = s.add_subparsers(dest="action", required=True)
    j = jsub.add_parser("list", help="newest first: id, status, start, duration, entrypoint")
    j.add_argument("--limit", type=int, default=20)
    j = jsub.add_parser("logs", help="a job's logs so far (--follow: as they come, until it ends)")
    j.add_argument("id", help="the job's submission id (as `submit` and `jobs list` print it)")
    j.add_argument("--follow", "-f", action="store_true")
    j = jsub.add_parser("stop", help="stop a running job (Ray sends SIGTERM, then SIGKILL)")
    j.add_argument("id")
    for j in jsub.choices.values():
        j.add_argument("--address", default=None, help="Jobs API URL (default: the local platform)")
    s.set_defaults(fn=_cmd_jobs)

    s = sub.add_parser("data", help="generate the sample data (heterogeneous sources about the same customers)")
    s.add_argument("--out", default=None, help="folder (default: $MLPLATFORM_HOME/data/demo)")
    s.add_argument("--entities", type=int, default=5000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shift", type=float, default=0.0, help="a moved world: 0 = the training world, 1 = large drift")
    s.add_argument("--flip-labels", action="store_true", help="invert the labels (a broken label pipeline)")
    s.set_defaults(fn=_cmd_data)

    admin_help = "Ray dashboard URL (default: the local platform, or $RAY_ADDRESS)"
    s = sub.add_parser("traffic", help="show or change an application's traffic split, shadow and faults live")
    tsub = s.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("show", help="the traffic policy as deployed")
    t.add_argument("app")
    t.add_argument("--address", default=None, help=admin_help)
    t = tsub.add_parser("set", help="change weights/shadow/faults; the rest stays (e.g. `set churn v1=90 v2=10`)")
    t.add_argument("app")
    t.add_argument(
        "weights",
        nargs="*",
        help="VERSION=PERCENT pairs summing to 100, a VERSION being a number (v2) or an alias (challenger); "
        "omit to keep the weights",
    )
    t.add_argument("--shadow", default=None, help="mirror traffic to VERSION[:PERCENT] (answers never returned)")
    t.add_argument("--no-shadow", action="store_true", help="stop mirroring")
    t.add_argument("--fault", action="append", help="inject failures: VERSION=PERCENT (drills); 0 clears")
    t.add_argument("--clear-faults", action="store_true", help="remove every injected fault")
    t.add_argument("--reason", default="", help="why, for the deployment history")
    t.add_argument("--address", default=None, help=admin_help)
    s.set_defaults(fn=_cmd_traffic)

    s = sub.add_parser("promote", help="send all traffic to a version and make it the champion")
    s.add_argument("app")
    s.add_argument("version")
    s.add_argument("--reason", default="")
    s.add_argument("--address", default=None, help=admin_help)
    s.set_defaults(fn=_cmd_promote)
    s = sub.add_parser("rollback", help="restore the traffic and aliases before the latest change")
    s.add_argument("app")
    s.add_argument("--reason", default="")
    s.add_argument("--address", default=None, help=admin_help)
    s.set_defaults(fn=_cmd_rollback)
    s = sub.add_parser("history", help="every change to what an application serves (from MLflow)")
    s.add_argument("app")
    s.add_argument("--last", type=int, default=0, help="only the last N changes")
    s.add_argument("--address", default=None, help=admin_help)
    s.set_defaults(fn=_cmd_history)

    s = sub.add_parser("rollout", help="the progressive rollout of an application: status, resume or abort it")
    rsub = s.add_subparsers(dest="action", required=True)
    for action, text in (
        ("status", "the rollout in progress (step, heartbeat), or the last one"),
        ("resume", "continue a rollout whose process stopped, from its step (submitted as a job)"),
        ("abort", "stop the rollout in progress and restore the policy it started from"),
    ):
        r = rsub.add_parser(action, help=text)
        r.add_argument("app")
        r.add_argument("--address", default=None, help=admin_help)
        if action == "abort":
            r.add_argument("--reason", default="")
    s.set_defaults(fn=_cmd_rollout)

    s = sub.add_parser("drift", help="compare two tables (training data vs live traffic): drift.json + report.html")
    s.add_argument("--reference", required=True, help="a dataset version folder, or any Parquet file or folder")
    s.add_argument(
        "--current", required=True, nargs="+", help="log:<app> (a window of its inference log), or Parquet paths"
    )
    s.add_argument("--since", default="24h", help="with log:<app>: how far back (e.g. 30m, 24h, 7d)")
    s.add_argument("--log-root", default=None, help="the inference log (default: $MLPLATFORM_HOME/inference_log)")
    s.add_argument("--model", default=None, help="NAME/VERSION for prediction and performance drift")
    s.add_argument("--config", default=None, help="YAML of thresholds and tests (a DriftConfig)")
    s.add_argument("--out", default=None, help="folder for drift.json and report.html (default: ./drift-<time>)")
    s.add_argument("--no-mlflow", action="store_true", help="do not record a drift run in MLflow")
    s.set_defaults(fn=_cmd_drift)

    s = sub.add_parser("monitor", help="continuous training: drift → retrain → gate → canary → promote/roll back")
    s.add_argument("--config", required=True, help="a monitor job config (jobs/configs/monitor.yaml)")
    s.add_argument("--every", default=None, help="repeat every DURATION (e.g. 10m) until stopped")
    s.add_argument("--force", action="store_true", help="retrain even if nothing fired")
    s.add_argument("--address", default=None, help="Jobs API URL (default: the local platform)")
    s.add_argument("--no-wait", action="store_true", help="return once submitted")
    s.set_defaults(fn=_cmd_monitor)

    s = sub.add_parser("load", help="a steady load on an endpoint for drills (tallies answers by version)")
    s.add_argument("model")
    s.add_argument("--rps", type=float, default=40)
    s.add_argument("--seconds", type=float, default=60)
    s.add_argument("--url", default=None, help="Serve HTTP address (default: the local platform's)")
    s.add_argument(
        "--dataset", default=None, help="send rows of this dataset version (or of the newest under a dataset folder)"
    )
    s.add_argument("--feedback", action="store_true", help="label each answer with its row's label (feedback route)")
    s.set_defaults(fn=_cmd_load)

    s = sub.add_parser("endpoint", help="show a served model's URL, versions, weights and a curl line")
    s.add_argument("model")
    s.add_argument("--url", default=None, help="Serve HTTP address (default: the local platform's)")
    s.set_defaults(fn=_cmd_endpoint)
    return p


# ------------------------------------------------------------------------------------------------ main


def _library_error(exc: BaseException) -> str | None:
    """One line for an error raised by a library under us that the user can act on; None for anything else."""
    mlflow = sys.modules.get("mlflow.exceptions")
    if mlflow is not None and isinstance(exc, mlflow.MlflowException):
        return f"MLflow: {exc.message}"
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.RequestException):
        url = getattr(getattr(exc, "request", None), "url", None)
        return f"cannot reach {url or 'a server'}: {type(exc).__name__}; is the platform up (`mlplatform status`)?"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        return f"invalid {exc.title}: " + "; ".join(validation_problems(exc))
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    own_process()
    cluster.as_local_driver()  # before any command imports Ray: `drift` and `run` join or start a loopback Ray
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, PlatformError):
            print(f"error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, ConfigError) else 1
        message = _library_error(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return 1
        print(
            f"error: unexpected {type(exc).__name__}: {exc}\n"
            "This is a bug in mlplatform; run the command again with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
