"""Plain tables through the whole platform: ingest → search → registry → endpoint, on shapes the demo does not
have. One CSV with a str key, a str label mapped by `positive:` and a str feature without `allowed`; a label
table of key and label only, joined to a wide Parquet table taken as it is and to aggregated events. And a table
no classifier can learn from, refused before any trial.

The module's jobs are submitted together at its start and run at once (as users' jobs do on one cluster): each
test waits for its own. Four pipelines deploy four applications at the same moment, which the Serve config's
lock keeps from deleting each other's."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
import yaml

from tests.conftest import ROOT
from tests.integration.conftest import cli, no_serve_apps

pytestmark = pytest.mark.integration

URL = "http://127.0.0.1:8000"
SITES = ["breast", "lung", "skin"]
TRAIN = {
    "num_boost_round": 20,
    "report_every": 10,
    "num_samples": 1,
    "max_concurrent_trials": 1,
    "cpus_per_trial": 0.5,
    "params": {"max_depth": 3, "eta": 0.3},  # the objective follows the task
    "register_top": 1,
    "gate": {"min_auc": 0.6, "max_calibration_error": 0.5, "max_latency_ratio": 20},
}


def write_job(name: str, data: dict, *, deploy: bool = True, **app_args) -> tuple[Path, Path]:
    """A pipeline config and its serve config (inside the repo: a submitted job uploads it)."""
    config = ROOT / "jobs" / "configs" / f"_test_{name}.yaml"
    serve = ROOT / "serve_configs" / f"_test_{name}.yaml"
    serve.write_text(
        yaml.safe_dump(
            {
                "proxy_location": "HeadOnly",
                "http_options": {"host": "127.0.0.1", "port": 8000},
                "applications": [
                    {
                        "name": name,
                        "route_prefix": f"/{name}",
                        "import_path": "mlplatform.release.app:build_app",
                        "args": {
                            "model_name": name,
                            "auth": "none",
                            "allow_missing": True,
                            "colocate": True,
                            "ingress_num_cpus": 0.1,
                            "versions": [{"alias": "champion", "weight": 100}],
                            **app_args,
                        },
                    }
                ],
            }
        )
    )
    job = {"data": data, "train": {**TRAIN, "model_name": name, "experiment": name}}
    if deploy:
        job["deploy"] = {"serve_config": f"serve_configs/_test_{name}.yaml"}
    config.write_text(yaml.safe_dump(job, sort_keys=False))  # field order is feature order
    return config, serve


@pytest.fixture(scope="module")
def tables(platform_env):
    """Every job of the module, submitted at once: name → (job id, what its test needs to check it)."""
    no_serve_apps(platform_env)  # other modules' endpoints hold CPU shares that the searches and scoring need
    home = Path(platform_env["MLPLATFORM_HOME"])
    folder = home / "data" / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    submits, extras = {}, {}
    for name, build in BUILDERS.items():
        data, extras[name], job, app_args = build(home, folder)
        config, serve = write_job(name, data, deploy=job == "pipeline", **app_args)
        written += [config, serve]
        submits[name] = ("submit", job, "--config", str(config.relative_to(ROOT)), "--no-wait")
    with ThreadPoolExecutor(len(submits)) as pool:
        outs = dict(zip(submits, pool.map(lambda a: cli(*a, env=platform_env).stdout, submits.values()), strict=True))
    jobs = {name: (out.split("submitted ", 1)[1].split()[0], extras[name]) for name, out in outs.items()}
    yield platform_env, home, folder, jobs
    for p in written:
        p.unlink(missing_ok=True)


def ended(env: dict[str, str], job_id: str) -> tuple[str, str]:
    """Wait for a job to end: (its status, its logs)."""
    out = cli("jobs", "logs", job_id, "--follow", env=env)
    return out.stderr.rsplit(": ", 1)[-1].strip(), out.stdout


def succeeded(env: dict[str, str], job_id: str) -> str:
    status, logs = ended(env, job_id)
    assert status == "SUCCEEDED", logs[-4000:]
    return logs


def booster_score(home: Path, model: str, row: np.ndarray) -> float:
    from mlplatform.cluster import load_state
    from mlplatform.registry import load_booster, model_uri

    booster = load_booster(model_uri(model, "1"), load_state(home).mlflow_url)
    return float(booster.inplace_predict(row.astype(np.float32)[None, :])[0])


def latest_table(home: Path, name: str):
    from mlplatform.data.version import load_version

    (folder,) = [p for p in (home / "datasets" / name).iterdir() if not p.name.startswith((".", "rejected"))]
    version = load_version(str(folder))
    return version, pd.read_parquet(version.table_path)


def tumours(home: Path, folder: Path):
    rng = np.random.default_rng(1)
    n = 1500
    m = rng.normal(size=(n, 6))
    site = rng.choice(SITES, n)
    score = m[:, 0] + 0.5 * m[:, 1] + (site == "lung") + rng.normal(scale=0.5, size=n)
    frame = pd.DataFrame({"id": [f"T-{i:05d}" for i in range(n)], **{f"m{j}": m[:, j] for j in range(6)}})
    frame["site"] = site
    frame["diagnosis"] = np.where(score > 0.5, "malignant", "benign")
    frame.to_csv(folder / "tumours.csv", index=False)
    data = {
        "name": "tumours",
        "key": "id",
        "label": "diagnosis",
        "positive": "malignant",
        "output_dir": str(home / "datasets"),
        "sources": [
            {
                "name": "tumours",
                "format": "csv",
                "path": str(folder / "tumours.csv"),
                "fields": {
                    "id": {"type": "str", "pattern": r"T-\d{5}"},
                    **{f"m{j}": {"type": "float"} for j in range(6)},
                    "site": {"type": "str"},
                    "diagnosis": {"type": "str", "allowed": ["malignant", "benign"]},
                },
            }
        ],
    }
    return data, {"frame": frame}, "pipeline", {}


def test_one_csv_with_str_key_str_label_and_a_categorical_trains_and_serves_raw_values(tables):
    env, home, folder, jobs = tables
    job_id, made = jobs["tumours"]
    frame, n = made["frame"], len(made["frame"])
    assert "1500 rows x 7 features" in succeeded(env, job_id)

    version, table = latest_table(home, "tumours")
    assert table["id"].str.startswith("T-").all() and len(table) == n  # the str key as it was
    assert table["diagnosis"].sum() == (frame["diagnosis"] == "malignant").sum()  # positive → 1
    assert version.manifest["categories"] == {"site": SITES}  # the data's values, sorted

    meta = requests.get(f"{URL}/tumours/v2/models/tumours", timeout=10).json()
    (site_input,) = [i for i in meta["inputs"] if i["name"] == "site"]
    assert site_input["datatype"] == "BYTES" and site_input["parameters"]["categories"] == SITES
    raw = frame.iloc[7]
    encoded = table.set_index("id").loc[raw["id"], version.features].to_numpy(dtype=float)
    body = {"instances": [{f: (raw[f] if f == "site" else float(raw[f])) for f in version.features}]}
    r = requests.post(f"{URL}/tumours/v1/models/tumours:predict", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert np.float32(r.json()["predictions"][0]) == np.float32(booster_score(home, "tumours", encoded))
    body["instances"][0]["site"] = "liver"
    r = requests.post(f"{URL}/tumours/v1/models/tumours:predict", json=body, timeout=10)
    assert r.status_code == 400 and "liver" in r.json()["error"] and "lung" in r.json()["error"]


def accounts(home: Path, folder: Path):
    rng = np.random.default_rng(2)
    n = 1200
    ids = np.arange(1, n + 1)
    w1, tier = rng.normal(size=n), rng.choice(["gold", "silver"], n)
    events = rng.choice(ids, 4000)
    counts = np.bincount(events, minlength=n + 1)[1:]
    y = ((w1 + (tier == "gold") + 0.3 * counts + rng.normal(scale=0.5, size=n)) > 1.8).astype(int)
    pd.DataFrame({"account": ids, "churned": y}).to_csv(folder / "labels.csv", index=False)
    wide = pd.DataFrame({"account": ids, "w1": w1, "tier": tier})
    pd.concat([wide, wide.iloc[:3]]).to_parquet(folder / "wide.parquet")  # three accounts twice: ambiguous
    with open(folder / "events.jsonl", "w") as f:
        for a in events:
            f.write(json.dumps({"account": int(a), "amount": float(rng.random())}) + "\n")
    data = {
        "name": "accounts",
        "key": "account",
        "label": "churned",
        "output_dir": str(home / "datasets"),
        "sources": [
            {
                "name": "labels",
                "format": "csv",
                "path": str(folder / "labels.csv"),
                "fields": {"account": {"type": "int"}, "churned": {"type": "int"}},
            },
            {
                "name": "wide",
                "format": "parquet",
                "path": str(folder / "wide.parquet"),
                "fields": {"account": {"type": "int"}, "w1": {"type": "float"}, "tier": {"type": "str"}},
            },
            {
                "name": "events",
                "format": "jsonl",
                "path": str(folder / "events.jsonl"),
                "fields": {"account": {"type": "int"}, "amount": {"type": "float"}},
                "features": [{"name": "n_events", "agg": "count"}, {"name": "spend", "agg": "sum", "column": "amount"}],
            },
        ],
    }
    return data, {"n": n, "tier": tier}, "pipeline", {}


def test_a_label_table_joined_to_a_wide_table_and_aggregated_events(tables):
    env, home, folder, jobs = tables
    job_id, made = jobs["accounts"]
    n, tier = made["n"], made["tier"]
    assert f"{n} rows x 4 features" in succeeded(env, job_id)

    version, table = latest_table(home, "accounts")
    assert version.features == ["w1", "tier", "n_events", "spend"]
    assert version.manifest["sources"]["wide"]["quarantined"] == 6  # both records of each doubled account
    assert table.set_index("account").loc[[1, 2, 3], "w1"].isna().all()  # ...so their wide features are unknown
    quarantine = pd.read_parquet(version.quarantine_path)
    assert quarantine["reason"].str.contains("account: duplicate value").sum() == 6
    row = table.set_index("account").loc[10]
    raw = {"w1": float(row["w1"]), "tier": tier[9], "n_events": float(row["n_events"]), "spend": float(row["spend"])}
    r = requests.post(f"{URL}/accounts/v1/models/accounts:predict", json={"instances": [raw]}, timeout=10)
    assert r.status_code == 200, r.text
    expected = booster_score(home, "accounts", row[version.features].to_numpy(dtype=float))
    assert np.float32(r.json()["predictions"][0]) == np.float32(expected)


def one_class(home: Path, folder: Path):
    (folder / "one_class.csv").write_text("id,x,y\n" + "".join(f"{i},{i * 0.1},1\n" for i in range(1, 301)))
    data = {
        "name": "one_class",
        "key": "id",
        "label": "y",
        "output_dir": str(home / "datasets"),
        "sources": [
            {
                "name": "t",
                "format": "csv",
                "path": str(folder / "one_class.csv"),
                "fields": {"id": {"type": "int"}, "x": {"type": "float"}, "y": {"type": "int"}},
            }
        ],
    }
    return data, {}, "train", {}


def test_a_table_of_one_class_is_refused_before_any_trial(tables):
    env, home, folder, jobs = tables
    status, text = ended(env, jobs["one_class"][0])
    assert status == "FAILED"
    assert "label 'y' is 1 in all 300 rows" in text, text[-3000:]
    assert "Trial" not in text and "trial_id" not in text  # no search started


def test_jobs_list_logs_and_stop(tables):
    env, home, folder, jobs = tables
    config = ROOT / "jobs" / "configs" / "_test_tumours.yaml"
    out = cli("submit", "train", "--config", str(config.relative_to(ROOT)), "--no-wait", env=env).stdout
    job_id = out.split("submitted ", 1)[1].split()[0]
    listed = cli("jobs", "list", env=env).stdout
    assert job_id in listed and "mlplatform-pipeline-" in listed  # the earlier tests' jobs too
    stopped = cli("jobs", "stop", job_id, env=env, timeout=120).stdout
    assert f"job {job_id}: STOPPED" in stopped
    assert "STOPPED" in next(line for line in cli("jobs", "list", env=env).stdout.splitlines() if job_id in line)
    logs = cli("jobs", "logs", job_id, env=env)
    assert "STOPPED" in logs.stderr
    unknown = cli("jobs", "logs", "no-such-job", env=env, check=False)
    assert unknown.returncode != 0 and "no job 'no-such-job'" in unknown.stderr


def test_the_run_records_its_ray_job(tables):
    from mlflow import MlflowClient
    from mlplatform.cluster import load_state

    env, home, folder, jobs = tables
    url = load_state(home).mlflow_url
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    run = client.get_run(client.get_model_version("tumours", "1").run_id)
    assert run.data.tags["mlplatform.ray_job_id"].startswith("mlplatform-pipeline-")
    # logged by the live callback as the trial reported, one point per report, and closed when it ended
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [10, 20]
    assert run.info.status == "FINISHED" and run.data.tags["mlplatform.search"].startswith("tumours-")


def test_a_version_is_reproduced_tree_for_tree(tables):
    env, home, folder, jobs = tables
    out = cli("reproduce", "tumours/1", env=env).stdout
    assert "tumours v1 (binary, 20 rounds) retrained on tumours@" in out, out
    assert "same booster, tree for tree: yes" in out and "val_auc" in out


def test_batch_scoring_scores_every_row_as_the_endpoint_does(tables):
    env, home, folder, jobs = tables
    frame = pd.read_csv(folder / "tumours.csv")
    odd = frame.iloc[[0]].assign(id="T-99999", site="liver")  # a site training never saw: scored as an error
    pd.concat([frame, odd]).to_csv(folder / "to_score.csv", index=False)
    out_dir = home / "scores"
    args = ["predict", "--model", "tumours@champion", "--input", str(folder / "to_score.csv"), "--out", str(out_dir)]
    # The small file is scored in the job's process; the actor pool that scores big ones must give the same file.
    pooled = [*args[:-1], str(home / "scores-pooled"), "--distributed"]
    with ThreadPoolExecutor(2) as pool:
        out, out_pooled = pool.map(lambda a: cli(*a, env=env, timeout=300).stdout, [args, pooled])
    assert f"{len(frame) + 1} rows scored by tumours@champion (v1)" in out and "1 row(s) could not be scored" in out
    scores = pd.read_parquet(out_dir).set_index("id")
    assert len(scores) == len(frame) + 1 and (scores["model_version"] == "1").all()
    assert np.isnan(scores.loc["T-99999", "prediction"]) and "liver" in scores.loc["T-99999", "error"]
    assert scores.drop(index="T-99999")["error"].isna().all()

    raw = frame.iloc[42]
    body = {
        "instances": [{f: (raw[f] if f == "site" else float(raw[f])) for f in [*(f"m{j}" for j in range(6)), "site"]}]
    }
    r = requests.post(f"{URL}/tumours/v1/models/tumours:predict", json=body, timeout=10)
    assert np.float32(scores.loc[raw["id"], "prediction"]) == np.float32(r.json()["predictions"][0])

    assert "could not be scored" in out_pooled
    pd.testing.assert_frame_equal(pd.read_parquet(home / "scores-pooled").set_index("id").loc[scores.index], scores)

    # Nothing is overwritten: refused before any Ray work (so here, in this process, rather than as a job).
    from mlplatform.cluster import load_state
    from mlplatform.errors import ConfigError
    from mlplatform.serve.batch import parse_model_ref, score

    with pytest.raises(ConfigError, match="already exists"):
        score(
            parse_model_ref("tumours@champion"),
            str(folder / "to_score.csv"),
            str(out_dir),
            tracking_uri=load_state(home).mlflow_url,
        )


def _one_csv(name: str, home: Path, folder: Path, frame: pd.DataFrame, label: str, fields: dict, **top) -> dict:
    frame.to_csv(folder / f"{name}.csv", index=False)
    return {
        "name": name,
        "key": "id",
        "label": label,
        "output_dir": str(home / "datasets"),
        "sources": [{"name": name, "format": "csv", "path": str(folder / f"{name}.csv"), "fields": fields}],
        **top,
    }


def iris(home: Path, folder: Path):
    """An iris-shaped table: four measurements and a species among three, named by their raw values."""
    rng = np.random.default_rng(3)
    n, species = 900, np.array(["setosa", "versicolor", "virginica"])
    which = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)) + which[:, None] * np.array([1.5, -1.0, 2.0, 0.5])
    frame = pd.DataFrame({"id": np.arange(1, n + 1), **{f"f{j}": x[:, j] for j in range(4)}, "species": species[which]})
    fields = {"id": {"type": "int"}, **{f"f{j}": {"type": "float"} for j in range(4)}, "species": {"type": "str"}}
    data = _one_csv("iris", home, folder, frame, "species", fields, task="multiclass")
    return data, {"species": species}, "pipeline", {"inference_log": {"flush_s": 1}}


def test_multiclass_trains_gates_and_serves_one_probability_per_class(tables):
    env, home, folder, jobs = tables
    job_id, made = jobs["iris"]
    species = made["species"]
    assert "val_mlogloss" in succeeded(env, job_id)

    version, table = latest_table(home, "iris")
    assert version.manifest["task"] == "multiclass" and version.manifest["classes"] == list(species)
    assert sorted(table["species"].unique()) == [0, 1, 2]
    meta = requests.get(f"{URL}/iris/v2/models/iris", timeout=10).json()
    assert meta["outputs"][0]["shape"] == [-1, 3] and meta["outputs"][0]["parameters"]["classes"] == list(species)
    row = table.iloc[0]
    body = {"instances": [{f"f{j}": float(row[f"f{j}"]) for j in range(4)}]}
    r = requests.post(f"{URL}/iris/v1/models/iris:predict", json=body, timeout=10)
    assert r.status_code == 200, r.text
    probabilities = np.asarray(r.json()["predictions"][0], dtype=np.float32)
    assert probabilities.shape == (3,) and abs(float(probabilities.sum()) - 1) < 1e-5
    from mlplatform.cluster import load_state
    from mlplatform.registry import load_booster, model_uri

    booster = load_booster(model_uri("iris", "1"), load_state(home).mlflow_url)
    expected = booster.inplace_predict(row[version.features].to_numpy(dtype=np.float32)[None, :])[0]
    np.testing.assert_array_equal(probabilities, expected.astype(np.float32))

    # Monitoring follows the task: labels come back by class name, drift scores the log by accuracy.
    rows = table.iloc[:200]
    body = {"instances": [{f"f{j}": float(r[f"f{j}"]) for j in range(4)} for _, r in rows.iterrows()]}
    answer = requests.post(f"{URL}/iris/v1/models/iris:predict", json=body, timeout=10)
    rid = answer.headers["x-request-id"]
    labels = [{"request_id": rid, "row": i, "label": str(species[c])} for i, c in enumerate(rows["species"])]
    fed = requests.post(f"{URL}/iris/v1/models/iris/feedback", json={"labels": labels}, timeout=10).json()
    assert fed["counts"] == {"accepted": 200}, fed
    bad = requests.post(
        f"{URL}/iris/v1/models/iris/feedback", json={"labels": [{"request_id": rid, "label": "rose"}]}, timeout=10
    ).json()
    assert "one of ['setosa', 'versicolor', 'virginica']" in bad["results"][0]["message"]
    out_dir, logged = home / "iris-drift", home / "inference_log" / "requests" / "app=iris"
    for _ in range(40):  # the router writes its log every second (flush_s)
        if sum(pq.read_metadata(p).num_rows for p in logged.rglob("part-*.parquet")) >= 201:  # + the first row
            break
        time.sleep(0.5)
    cli(
        "drift",
        "--reference",
        version.path,
        "--current",
        "log:iris",
        "--model",
        "iris/1",
        "--no-mlflow",
        "--out",
        str(out_dir),
        env=env,
    )
    performance = json.loads((out_dir / "drift.json").read_text())["performance"]
    assert performance["task"] == "multiclass" and performance["rows"] == 200
    assert performance["metrics"]["accuracy"] > 0.7 and "accuracy" in performance["reference"]
    assert not performance["drifted"] and "labelled accuracy" in performance["message"]


def houses(home: Path, folder: Path):
    """A housing-shaped table: measurements, a categorical district and a price."""
    rng = np.random.default_rng(4)
    n = 900
    x = rng.normal(size=(n, 3))
    district = rng.choice(["north", "south"], n)
    price = 200 + 30 * x[:, 0] - 10 * x[:, 1] + 25 * (district == "north") + rng.normal(scale=5, size=n)
    frame = pd.DataFrame({"id": np.arange(1, n + 1), "rooms": x[:, 0], "age": x[:, 1], "noise": x[:, 2]})
    frame["district"], frame["price"] = district, price
    fields = {
        "id": {"type": "int"},
        **{c: {"type": "float"} for c in ("rooms", "age", "noise")},
        "district": {"type": "str"},
        "price": {"type": "float"},
    }
    data = _one_csv("houses", home, folder, frame, "price", fields)  # a float label: regression, inferred
    return data, {"frame": frame}, "pipeline", {}


def test_regression_trains_gates_and_serves_a_value(tables):
    env, home, folder, jobs = tables
    frame = jobs["houses"][1]["frame"]
    out = succeeded(env, jobs["houses"][0])
    assert "val_rmse" in out and "→ champion" in out, out[-3000:]

    version, table = latest_table(home, "houses")
    assert version.manifest["task"] == "regression" and table["price"].dtype == np.float64
    raw = {c: float(frame.iloc[5][c]) for c in ("rooms", "age", "noise")} | {"district": frame.iloc[5]["district"]}
    r = requests.post(f"{URL}/houses/v1/models/houses:predict", json={"instances": [raw]}, timeout=10)
    assert r.status_code == 200, r.text
    assert abs(r.json()["predictions"][0] - frame.iloc[5]["price"]) < 40  # a price, not a probability


def test_applications_changed_at_once_keep_every_change(tables, monkeypatch):
    """Serve replaces every application with each PUT: without the lock on its config, of two changes to two
    applications made at the same moment one was put back by the other (in 3 rounds of 8, measured)."""
    from mlplatform.cluster import load_state
    from mlplatform.release.serve_api import ServeAdmin
    from mlplatform.release.traffic import TrafficControl

    env, home, folder, jobs = tables
    state = load_state(home)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", state.mlflow_url)
    apps = ["tumours", "accounts", "houses"]
    control = {app: TrafficControl(ServeAdmin(state.dashboard_url)) for app in apps}
    try:
        for i in range(1, 4):
            with ThreadPoolExecutor(len(apps)) as pool:
                list(pool.map(lambda a, i=i: control[a].set_traffic(a, faults={"1": {"abort_percent": i}}), apps))
            faults = {a: control[a].served(a).policy.faults.get("1") for a in apps}
            assert all(f is not None and f.abort_percent == i for f in faults.values()), (i, faults)
    finally:
        for a in apps:
            control[a].set_traffic(a, clear_faults=True)


BUILDERS = {"tumours": tumours, "accounts": accounts, "one_class": one_class, "iris": iris, "houses": houses}
