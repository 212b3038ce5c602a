"""The CLI fails early and clearly, without a cluster."""

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import DEMO_CONFIG, ROOT

MLPLATFORM = Path(sys.executable).parent / "mlplatform"


def run(*args, home):
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLPLATFORM_API_KEYS"):
        env.pop(name, None)
    return subprocess.run([str(MLPLATFORM), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_submit_without_a_cluster_says_what_to_do(tmp_path):
    out = run("submit", "ingest", "--config", str(DEMO_CONFIG), "--address", "http://127.0.0.1:9", home=tmp_path)
    assert out.returncode == 1
    assert "no Ray Jobs API at http://127.0.0.1:9" in out.stderr and "mlplatform up" in out.stderr
    assert "Traceback" not in out.stderr


def test_submit_config_outside_repo_is_refused(tmp_path):
    outside = tmp_path / "c.yaml"
    outside.write_text(DEMO_CONFIG.read_text())
    out = run("submit", "ingest", "--config", str(outside), home=tmp_path)
    assert out.returncode == 2 and "must live inside the repository" in out.stderr


def test_run_with_malformed_config_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    out = run("run", "ingest", "--config", str(bad), home=tmp_path)
    assert out.returncode == 2 and f"{bad}:" in out.stderr and "malformed YAML" in out.stderr


def test_status_before_up(tmp_path):
    out = run("status", home=tmp_path)
    assert out.returncode == 1 and "mlplatform up" in out.stderr


def test_endpoint_without_server(tmp_path):
    out = run("endpoint", "churn", "--url", "http://127.0.0.1:9", home=tmp_path)
    assert out.returncode == 1 and "no endpoint answers at http://127.0.0.1:9" in out.stderr


def test_down_when_nothing_runs(tmp_path):
    out = run("down", home=tmp_path)
    assert out.returncode == 0 and "nothing was running" in out.stdout


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "case,args,code,needle",
    [
        (
            "no platform: traffic",
            ["traffic", "show", "churn", "--address", "http://127.0.0.1:9"],
            1,
            "no Ray dashboard",
        ),
        ("no platform: history", ["history", "churn", "--address", "http://127.0.0.1:9"], 1, "no MLflow server known"),
        ("no platform: status", ["status"], 1, "run `mlplatform up`"),
        ("missing config file", ["run", "ingest", "--config", "nope.yaml"], 2, "nope.yaml: config file not found"),
        ("config is a folder", ["run", "ingest", "--config", "{tmp}"], 2, "is a folder, not a config file"),
        ("duplicate YAML key", ["run", "ingest", "--config", "{dup}"], 2, "duplicate key 'data'"),
        ("invalid config", ["run", "ingest", "--config", "{bad}"], 2, "data.key: Field required"),
        ("bad weights", ["traffic", "set", "churn", "v1:90"], 2, "'v1:90' is not VERSION=PERCENT"),
        (
            "bad job timeout",
            ["submit", "train", "--config", str(DEMO_CONFIG), "--timeout", "soon", "--address", "http://127.0.0.1:9"],
            2,
            "a duration is a number and a unit",
        ),
        ("unknown model", ["endpoint", "nope", "--url", "{url}"], 1, "model 'nope' is not served (404"),
        ("no endpoint", ["load", "churn", "--url", "http://127.0.0.1:9", "--seconds", "1"], 1, "no endpoint answers"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(tmp_path, not_found_server, case, args, code, needle):
    values = {
        "tmp": str(tmp_path),
        "dup": write(tmp_path / "dup.yaml", "data: {}\ndata: {}\n"),
        "bad": write(tmp_path / "bad.yaml", "data: {name: x, label: y, output_dir: o, sources: []}\n"),
        "url": not_found_server,
    }
    out = run(*[a.format(**values) for a in args], home=tmp_path / "home")
    assert out.returncode == code, (case, out.stdout, out.stderr)
    assert needle in out.stderr, (case, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: "), (case, out.stderr)


def test_debug_shows_the_traceback(tmp_path):
    out = run("--debug", "run", "ingest", "--config", "nope.yaml", home=tmp_path)
    assert out.returncode == 2 and "Traceback" in out.stderr and "config file not found" in out.stderr


@pytest.fixture
def not_found_server():
    """A real HTTP server that serves no model: every path is a 404."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = b'{"error": "model not served"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_haproxy_wrapper_binds_every_wildcard_listener_to_loopback(tmp_path):
    import subprocess

    from mlplatform.cluster import loopback_haproxy

    fake = tmp_path / "fake-haproxy"  # prints its arguments and the config it was given
    fake.write_text('#!/bin/sh\necho "$@"\nwhile [ "$1" != "-f" ]; do shift; done\ncat "$2"\n')
    fake.chmod(0o755)
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "frontend prometheus\n    bind :9101\nfrontend http_frontend\n    bind 127.0.0.1:8000\n"
        "frontend other\n    bind 0.0.0.0:8001\nlisten stats\n  bind *:8404\n"
        "backend b\n    server r1 127.0.0.1:30001 check\n"
    )
    wrapper = loopback_haproxy(tmp_path / "home", real=str(fake))
    out = subprocess.run([wrapper, "-db", "-f", str(config), "-dR", "-sf", "123"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    args, *lines = out.stdout.splitlines()
    assert args == f"-db -f {config}.loopback -dR -sf 123"  # same arguments, the rewritten config
    binds = [line.split()[1] for line in lines if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8404"]
    assert "server r1 127.0.0.1:30001 check" in out.stdout
    assert config.read_text().count("bind :9101") == 1  # Ray's own file is left as it rendered it


def test_a_job_past_its_time_limit_stops_saying_why():
    """`submit --timeout`: the job's process ends with 124 (as timeout(1)) wherever it is stuck."""
    code = "from mlplatform.launch import arm_deadline; arm_deadline(0.3, 'job train'); import time; time.sleep(30)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 124
    assert "job train ran past its time limit of 0.3 s (--timeout); stopped" in out.stderr
