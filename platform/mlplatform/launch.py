"""The thin job layer: launch a lifecycle job in this process, or submit it to a Ray cluster's Jobs API.

`submit` validates the config locally first (a bad config never reaches the cluster), uploads the
repository as the job's working_dir, streams the logs and returns the job's exit status. Inside the job,
`job_main` (the body of every `jobs/<job>.py`) parses args, loads the config, connects to Ray and calls
`mlplatform.pipeline.run_job`; `run_local` does the same on an embedded Ray (`mlplatform run`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlplatform
from mlplatform import cluster
from mlplatform.config import load_config
from mlplatform.errors import ConfigError, JobFailedError, PlatformError, PlatformNotRunningError
from mlplatform.job_configs import JobOptions, config_model
from mlplatform.registry import git_commit
from mlplatform.settings import (
    MLFLOW_TRACKING_URI,
    MLPLATFORM_GIT_COMMIT,
    MLPLATFORM_SUBMITTED_BY,
    RAY_ADDRESS,
    platform_home,
)
from mlplatform.xgb import own_process

__all__ = [
    "arm_deadline",
    "TIMED_OUT",
    "job_main",
    "predict_main",
    "submit",
    "run_local",
    "repo_root",
    "list_jobs",
    "job_logs",
    "stop_job",
    "EXCLUDES",
]

#: Never uploaded with the working_dir: environments, state, caches.
EXCLUDES = [
    ".venv",
    ".mlplatform",
    ".git",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "mlruns",
]


def repo_root() -> Path:
    """The repository holding jobs/ (the working_dir uploaded with a job)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "jobs").is_dir() and (p / "platform" / "mlplatform").is_dir():
            return p
    raise PlatformError(f"run this from the mlplatform repository (no jobs/ and platform/mlplatform/ above {here})")


def _connect() -> None:
    import ray

    if ray.is_initialized():
        return
    runtime_env = {}
    bootstrap = sys.modules.get("_bootstrap")
    if bootstrap is not None and getattr(bootstrap, "INSERTED", False):
        # The package came from the uploaded working_dir, not from an install: ship it to tasks and actors.
        runtime_env["py_modules"] = [mlplatform]
    ray.init(runtime_env=runtime_env or None)


#: The exit code of a job stopped by its time limit (as timeout(1) exits).
TIMED_OUT = 124


def arm_deadline(seconds: float, what: str) -> threading.Timer:
    """End this process `seconds` from now, saying why, unless it ended before (a job's `--timeout`).

    The process exits with `TIMED_OUT` without unwinding: a job past its limit may be stuck anywhere (a
    trial, a wait on Serve), and Ray ends the tasks and actors it owns when its driver goes.
    """

    def expire() -> None:
        print(f"error: {what} ran past its time limit of {seconds:g} s (--timeout); stopped", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(TIMED_OUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def job_main(job: str, argv: list[str] | None = None) -> int:
    """Entrypoint of jobs/<job>.py. Returns the process exit code."""
    own_process()
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py")
    parser.add_argument("--config", help="YAML config of the job")
    parser.add_argument("--timeout-s", type=float, help="stop the job after this many seconds (exit code 124)")
    parser.add_argument(
        "--resume", action="store_true", help="train/pipeline: finish the interrupted search; rollout: continue it"
    )
    parser.add_argument("--resume-app", help="rollout: continue the interrupted rollout of this application")
    parser.add_argument("--every", help="monitor: repeat the pass this often (e.g. 10m) until stopped")
    parser.add_argument("--force", action="store_true", help="monitor: retrain even if nothing fired")
    args = parser.parse_args(argv)
    if args.config is None and not (job == "rollout" and args.resume_app):
        parser.error("--config is required")
    if args.timeout_s is not None:
        arm_deadline(args.timeout_s, f"job {job}")
    try:
        cfg = load_config(args.config, config_model(job)) if args.config else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if job in ("train", "deploy", "pipeline", "rollout", "monitor") and not MLFLOW_TRACKING_URI.get():
        print(
            "error: MLFLOW_TRACKING_URI is not set. Start the local platform with `mlplatform up` (it exports "
            "it to every Ray process) or set it in the cluster's environment (cluster.yaml).",
            file=sys.stderr,
        )
        return 2
    _connect()
    try:
        from mlplatform.pipeline import run_job  # the steps: Ray Tune, Serve, MLflow (not needed to submit)

        run_job(
            job,
            cfg,
            JobOptions(resume=args.resume, resume_app=args.resume_app, every=args.every, force=args.force),
        )
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of batch scoring: the job's command line, and `mlplatform predict`'s (which forwards them)."""
    parser.add_argument("--model", required=True, help="NAME@ALIAS (churn@champion), NAME/VERSION (churn/3) or NAME")
    parser.add_argument("--input", required=True, help="a CSV or Parquet file, or a folder of Parquet files")
    parser.add_argument("--out", required=True, help="a new folder: Parquet with key, prediction, model_version, error")
    parser.add_argument("--key", help="the column identifying a row (default: the training data's key)")
    parser.add_argument("--concurrency", type=int, help="scoring actors (default: one per CPU of the cluster)")
    parser.add_argument("--cpus-per-actor", type=float, help="CPUs of each scoring actor (default: free CPUs / actors)")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, help="> 0: predict on GPUs (device cuda)")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="score on an actor pool whatever the input and the cluster (by default an input of up to 64 MiB, or "
        "any input on a one-node cluster, is scored in the job's process)",
    )


def predict_main(argv: list[str] | None = None) -> int:
    """Entrypoint of jobs/predict.py: batch scoring of a file by a registered version. Returns the exit code."""
    from mlplatform.pipeline import predict_step

    own_process()

    parser = argparse.ArgumentParser(prog="jobs/predict.py", description="score every row of a file")
    predict_arguments(parser)
    args = parser.parse_args(argv)
    if not MLFLOW_TRACKING_URI.get():
        print("error: MLFLOW_TRACKING_URI is not set (`mlplatform up` exports it to Ray's processes)", file=sys.stderr)
        return 2
    _connect()
    try:
        predict_step(
            args.model,
            args.input,
            args.out,
            key=args.key,
            concurrency=args.concurrency,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            distributed=args.distributed,
        )
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_local(job: str, config: str, *, resume: bool = False) -> int:
    """Run a job in this process on an embedded local Ray (`mlplatform run`); no `mlplatform up` needed.

    Jobs that record to MLflow use the local platform's server when it is up; otherwise a server is
    started on the same store for the duration of the run, so its runs and versions are kept.
    """
    import ray

    load_config(config, config_model(job))  # fail on a bad config before starting anything
    own_mlflow = None
    if job != "ingest" and not MLFLOW_TRACKING_URI.get():
        state = cluster.load_state()
        url = state.mlflow_url if state else "http://127.0.0.1:5000"
        if not cluster.answers(f"{url}/health"):
            print(f"starting an MLflow server for this run at {url} (store: {platform_home()})", flush=True)
            own_mlflow = cluster.start_mlflow(platform_home(), int(url.rsplit(":", 1)[1]))
        os.environ[MLFLOW_TRACKING_URI.name] = url
    ray.init(address="local", include_dashboard=False)
    try:
        return job_main(job, ["--config", config, *(["--resume"] if resume else [])])
    finally:
        if job in ("deploy", "pipeline"):
            print("note: this endpoint lives as long as the embedded Ray; `mlplatform submit` keeps it up")
        ray.shutdown()
        cluster.stop(own_mlflow)


def _address(address: str | None) -> str:
    if address:
        return address
    env = RAY_ADDRESS.get() or ""
    if env.startswith("http"):
        return env
    state = cluster.load_state()
    return state.dashboard_url if state else "http://127.0.0.1:8265"


def submit(
    job: str,
    config: str | None,
    address: str | None = None,
    *,
    wait: bool = True,
    resume: bool = False,
    resume_app: str | None = None,
    every: str | None = None,
    force: bool = False,
    timeout: str | None = None,
    job_args: list[str] | None = None,
) -> int:
    """Submit jobs/<job>.py with `config` to the Ray Jobs API at `address`; stream logs; return exit code.

    Args:
        job_args: more arguments of the job's command line (predict: its model, input and output).
        resume_app: rollout only, instead of a config: continue the interrupted rollout of this application.
        every: monitor only: repeat the pass this often (the job runs until stopped).
        force: monitor only: retrain even if nothing fired.
        timeout: a duration (``90s``, ``30m``, ``2h``): the job stops past it, FAILED with exit code 124.

    Raises:
        ConfigError: the config is invalid (nothing is submitted) or lies outside the repository.
        JobFailedError: with `wait`, the job ended FAILED or STOPPED.
    """
    from ray.job_submission import JobStatus

    root = repo_root()
    if not (root / "jobs" / f"{job}.py").exists():
        raise ConfigError(f"unknown job {job!r}: no {root / 'jobs' / (job + '.py')}")
    args = []
    if config is not None:
        cfg_path = Path(config).resolve()
        load_config(cfg_path, config_model(job))
        try:
            args += ["--config", cfg_path.relative_to(root).as_posix()]
        except ValueError:
            raise ConfigError(
                f"{config}: the config must live inside the repository ({root}), which is uploaded as the job's "
                "working_dir"
            ) from None
    args += ["--resume"] if resume else []
    args += ["--resume-app", resume_app] if resume_app else []
    args += ["--every", every] if every else []
    args += ["--force"] if force else []
    if timeout is not None:
        from mlplatform.monitor.config import parse_duration

        args += ["--timeout-s", f"{parse_duration(timeout).total_seconds():g}"]
    args += job_args or []
    addr, client = _client(address)
    job_id = client.submit_job(
        entrypoint=shlex.join(["python", f"jobs/{job}.py", *args]),
        submission_id=f"mlplatform-{job}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        runtime_env={
            "working_dir": str(root),
            "excludes": EXCLUDES,
            "env_vars": {MLPLATFORM_GIT_COMMIT.name: git_commit(root), MLPLATFORM_SUBMITTED_BY.name: getpass.getuser()},
        },
    )
    print(f"submitted {job_id} to {addr}", flush=True)
    if not wait:
        return 0
    status = _follow(client, job_id)
    if status != JobStatus.SUCCEEDED:
        # The logs were streamed above; Ray's message repeats them, so keep its first line only.
        message = (client.get_job_info(job_id).message or "").strip().splitlines()
        raise JobFailedError(f"job {job_id} {status.value}: {message[0] if message else ''}".strip())
    print(f"job {job_id} succeeded", flush=True)
    return 0


# ------------------------------------------------------------------------------------ the jobs of a cluster


def _client(address: str | None) -> tuple[str, Any]:
    """(address, JobSubmissionClient) of the Jobs API at `address` (default: the local platform's)."""
    from ray.job_submission import JobSubmissionClient

    addr = _address(address)
    try:
        return addr, JobSubmissionClient(addr, headers=cluster.auth_headers())
    except ConnectionError as exc:
        raise PlatformNotRunningError(
            f"no Ray Jobs API at {addr}: start the local platform with `mlplatform up`, or pass --address "
            f"(and forward the dashboard port of a remote cluster). ({exc})"
        ) from None


def _follow(client: Any, job_id: str) -> Any:
    """Print the job's logs as they come until it ends; its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return status


def _known(client: Any, addr: str, job_id: str) -> Any:
    """The job's info; ConfigError naming the job when the cluster has no such job."""
    try:
        return client.get_job_info(job_id)
    except RuntimeError:
        raise ConfigError(f"no job {job_id!r} at {addr}; `mlplatform jobs list` shows the jobs there") from None


def list_jobs(address: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The cluster's jobs, newest first: id, status, what runs, when it started and how long it ran."""
    _, client = _client(address)
    rows = []
    for info in sorted(client.list_jobs(), key=lambda j: j.start_time or 0, reverse=True)[:limit]:
        ended = info.end_time or time.time() * 1000
        rows.append(
            {
                "id": info.submission_id or info.job_id,
                "status": info.status.value,
                "entrypoint": info.entrypoint,
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((info.start_time or 0) / 1000)),
                "seconds": round((ended - (info.start_time or ended)) / 1000, 1),
                "message": (info.message or "").strip().splitlines()[0] if info.message else "",
            }
        )
    return rows


def job_logs(job_id: str, address: str | None = None, *, follow: bool = False) -> str:
    """A job's status; its logs printed (all so far, or with `follow` as they come until it ends)."""
    addr, client = _client(address)
    _known(client, addr, job_id)
    if follow:
        return _follow(client, job_id).value
    print(client.get_job_logs(job_id), end="", flush=True)
    return client.get_job_status(job_id).value


def stop_job(job_id: str, address: str | None = None, *, wait_s: float = 30.0) -> str:
    """Ask Ray to stop the job (SIGTERM, then SIGKILL after Ray's grace period); its status once it ended or
    after `wait_s`."""
    addr, client = _client(address)
    info = _known(client, addr, job_id)
    if info.status.is_terminal():
        return info.status.value
    client.stop_job(job_id)
    deadline = time.time() + wait_s
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return status.value
