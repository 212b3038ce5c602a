"""Drift between two tables, computed on Ray: `mlplatform drift --reference REF --current CUR`.

Ray Data reads both sides in parallel (only the columns compared; an inference-log window's ``features``
struct flattened and its labels joined) and leaves them in the object store as Arrow blocks; one Ray task
per feature then takes that feature's column from every block and computes its statistics
(`mlplatform.monitor.stats`), so features are compared in parallel across the cluster and no process ever
holds both tables whole. The driver only decides: which features drifted by the configured test, and
whether the table did (the weighted share of drifted features). It also scores the reference with the
model when the current side has predictions and the reference has none (prediction drift), and measures the
labelled rows' quality against the version's validation metrics (performance drift).

Output: the `drift.json` dict (see `mlplatform.monitor.report` for its shape), optionally written with the
HTML report, logged as an MLflow ``drift`` run linked to the model version and dataset, and exported as Ray
metrics (Prometheus gauges ``ray_mlplatform_drift_*``) by the process that ran it — the monitor loop keeps
them current; a one-shot run exports them while it lives, so dashboards should read the MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlplatform import registry
from mlplatform.cluster import quiet_ray_data
from mlplatform.data.local import SMALL_INPUT_BYTES, read_parquet
from mlplatform.errors import DataContractError
from mlplatform.monitor.config import DriftConfig
from mlplatform.monitor.report import write_report
from mlplatform.monitor.stats import categorical_stats, numeric_stats
from mlplatform.monitor.window import Table, flatten_log, read_feedback, resolve
from mlplatform.train.task import Task

__all__ = ["drift", "compare", "decide", "write_outputs", "log_to_mlflow", "export_gauges", "DRIFT_EXPERIMENT"]

DRIFT_EXPERIMENT = "mlplatform-drift"
P_TESTS = {"ks": "ks_pvalue", "chi2": "chi2_pvalue"}


def _is_categorical(name: str, dtype: pa.DataType, table: Table, cfg: DriftConfig) -> bool:
    return (
        name in cfg.categorical
        or name in table.categorical
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_dictionary(dtype)
    )


def _column(blocks: list[pa.Table], name: str) -> pa.ChunkedArray:
    return pa.chunked_array([c for b in blocks if name in b.column_names for c in b[name].chunks], type=None)


def _feature_task(name: str, kind: str, ref_refs: list, cur_refs: list) -> dict[str, Any]:
    """Statistics of one feature from the blocks of both sides (runs as a Ray task)."""
    import pyarrow.compute as pc
    import ray

    ref_blocks, cur_blocks = ray.get(ref_refs), ray.get(cur_refs)
    ref, cur = _column(ref_blocks, name), _column(cur_blocks, name)
    if kind == "categorical":

        def counts(col: pa.ChunkedArray) -> tuple[dict[Any, int], int]:
            vc = pc.value_counts(col.drop_null()) if len(col) else pa.array([], pa.struct([]))
            return {v["values"]: int(v["counts"]) for v in vc.to_pylist()}, col.null_count

        (r, r_missing), (c, c_missing) = counts(ref), counts(cur)
        return categorical_stats(r, c, missing=(r_missing, c_missing))

    def values(col: pa.ChunkedArray) -> np.ndarray:
        return pc.cast(col, pa.float64()).to_numpy() if len(col) else np.array([], dtype=float)

    return numeric_stats(values(ref), values(cur))


def _score_task(model: str, version: str, tracking_uri: str | None, features: list[str], ref_refs: list) -> np.ndarray:
    """The model's predictions on the reference rows (runs as a Ray task)."""
    import pyarrow.compute as pc
    import ray

    booster = registry.load_booster(registry.model_uri(model, version), tracking_uri)
    out = []
    for block in ray.get(ref_refs):
        x = np.column_stack([pc.cast(block[f], pa.float32()).to_numpy(zero_copy_only=False) for f in features])
        scores = np.asarray(booster.inplace_predict(x), dtype=np.float64).reshape(len(x), -1)
        # As the inference log keeps them: a multiclass model's likeliest class, another's one score.
        out.append(scores.argmax(axis=1).astype(np.float64) if scores.shape[1] > 1 else scores[:, 0])
    return np.concatenate(out) if out else np.array([])


def _read(table: Table, columns: list[str], labels: pa.Table | None) -> list:
    """Arrow block refs of `columns` of `table`, read by Ray Data — or in this process when its files hold at
    most `SMALL_INPUT_BYTES` in all: Ray Data read a log window's few hundred small files in 94 s in the loop
    test, one read task per file (the same columns either way)."""
    import ray
    import ray.data

    logged = ["request_id", "row", "ts", "model", "prediction", "features"]
    logged += ["probabilities"] if "probabilities" in table.columns else []
    keep = [c for c in columns if c in table.columns or (table.is_log and c in ("version", "label"))]
    if sum(i.size or 0 for i in table.filesystem.get_file_info(table.files)) <= SMALL_INPUT_BYTES:
        read = logged if table.is_log else keep
        whole = read_parquet(table.files, fs=table.filesystem, columns=read, with_paths=table.is_log)
        return [ray.put((flatten_log(whole, labels) if table.is_log else whole).select(keep))]
    if table.is_log:
        ds = ray.data.read_parquet(
            table.files, filesystem=table.filesystem, columns=logged, include_paths=True, partitioning=None
        )
        ds = ds.map_batches(flatten_log, batch_format="pyarrow", batch_size=None, fn_kwargs={"labels": labels})
        ds = ds.select_columns(keep)
    else:
        ds = ray.data.read_parquet(table.files, filesystem=table.filesystem, columns=keep)
    return list(ds.to_arrow_refs())


def _severity(test: str, score: float | None, threshold: float) -> float:
    """How far past its threshold a statistic is (1 = at it): value/threshold for distances, and
    log p / log threshold for p-values (so p = 0.05 → 1, p = 0.0025 → 2 at a 0.05 threshold)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return 0.0
    if test in P_TESTS:
        return min(50.0, math.log(max(score, 1e-300)) / math.log(threshold))
    return score / threshold


def decide(stats: dict[str, Any], kind: str, cfg: DriftConfig) -> dict[str, Any]:
    """Add the configured test's verdict to one feature's statistics."""
    test = cfg.numeric_test if kind == "numeric" else cfg.categorical_test
    key = P_TESTS.get(test, test)
    threshold = {"ks": cfg.ks_pvalue, "chi2": cfg.chi2_pvalue, "psi": cfg.psi, "js": cfg.js}[test]
    score = stats.get(key)
    if score is None:
        drifted = False
    else:
        drifted = score < threshold if test in P_TESTS else score > threshold
    return {
        "kind": kind,
        "test": test,
        "score": score,
        "threshold": threshold,
        "severity": _severity(test, score, threshold),
        "drifted": bool(drifted),
        **stats,
    }


def _verdict(features: dict[str, dict[str, Any]], cfg: DriftConfig, rows: int) -> dict[str, Any]:
    compared = {f: s for f, s in features.items() if s["kind"] in ("numeric", "categorical")}
    weights = {f: cfg.weights.get(f, 1.0) for f in compared}
    total = sum(weights.values())
    drifted = sorted((f for f, s in compared.items() if s["drifted"]), key=lambda f: -features[f]["severity"])
    share = sum(weights[f] for f in drifted) / total if total else 0.0
    if rows < cfg.min_rows:
        return {
            "drifted": None,
            "share": share,
            "threshold": cfg.drift_share,
            "drifted_features": drifted,
            "message": f"no verdict: {rows} current rows, fewer than min_rows {cfg.min_rows}",
        }
    verdict = share >= cfg.drift_share
    return {
        "drifted": verdict,
        "share": share,
        "threshold": cfg.drift_share,
        "drifted_features": drifted,
        "message": f"{len(drifted)} of {len(compared)} features drifted (weighted share {share:.2f} "
        f"{'≥' if verdict else '<'} {cfg.drift_share:g})",
    }


#: Per task, the labelled score performance drift watches, and whether a fall or a rise is the bad direction.
_WATCHED = {"binary": ("auc", "max"), "multiclass": ("accuracy", "max"), "regression": ("rmse", "min")}


def _task_of(side: dict[str, np.ndarray], tags: dict[str, str]) -> str:
    """The model's task: as registered, or read from the log (probabilities: multiclass; a 0/1 label and scores
    in [0, 1]: binary; otherwise regression)."""
    if tags.get("mlplatform.task"):
        return tags["mlplatform.task"]
    if "probabilities" in side:
        return "multiclass"
    y, p = side["label"], side["prediction"]
    y, p = y[~np.isnan(y)], p[~np.isnan(p)]
    return "binary" if np.isin(y, (0.0, 1.0)).all() and ((p >= 0) & (p <= 1)).all() else "regression"


def _reference(task: str, tags: dict[str, str]) -> dict[str, float]:
    """The version's validation metrics, named as `Task.scores` names the live ones."""
    val = {
        k.removeprefix("mlplatform.metric.val_"): float(v)
        for k, v in tags.items()
        if k.startswith("mlplatform.metric.val_")
    }
    if task == "multiclass" and "merror" in val:
        val["accuracy"] = 1.0 - val.pop("merror")
    return val


def _performance(
    cur: dict[str, np.ndarray], model: tuple[str, str] | None, tracking_uri: str | None, cfg: DriftConfig
) -> dict[str, Any] | None:
    """Quality on the labelled rows against the version's validation metrics, overall and per hour, by the
    model's task: AUC, log loss and calibration (binary); log loss, accuracy and macro F1 (multiclass); RMSE,
    MAE and R² (regression). Performance drift is the watched score worse than validation by more than
    ``performance_drop``: AUC or accuracy that much lower, RMSE that fraction higher."""
    if "label" not in cur or "prediction" not in cur:
        return None
    has = ~np.isnan(cur["label"]) & ~np.isnan(cur["prediction"])
    if not has.any():
        return None
    tags = dict(registry.client(tracking_uri).get_model_version(*model).tags) if model is not None else {}
    kind = _task_of({k: v[has] for k, v in cur.items()}, tags)
    task = Task(kind)
    y, ts = cur["label"][has], cur["ts"][has] if "ts" in cur else None
    p = cur["probabilities"][has] if kind == "multiclass" and "probabilities" in cur else cur["prediction"][has]
    if kind == "multiclass" and p.ndim != 2:
        return {
            "rows": int(len(y)),
            "metrics": {},
            "reference": None,
            "drifted": False,
            "task": kind,
            "message": f"{len(y)} labelled rows, but the log has no class probabilities to score them by",
        }

    def metrics(yy: np.ndarray, pp: np.ndarray) -> dict[str, Any]:
        return {k: (None if math.isnan(v) else v) for k, v in task.scores(yy, pp).items()}

    out: dict[str, Any] = {
        "task": kind,
        "rows": int(len(y)),
        "metrics": metrics(y, p),
        "reference": _reference(kind, tags) if model is not None else None,
    }
    if ts is not None and len(ts):
        hours = ts.astype("datetime64[h]")
        out["over_time"] = [
            {"at": f"{h}:00:00Z", "rows": int((hours == h).sum()), **metrics(y[hours == h], p[hours == h])}
            for h in np.unique(hours)
        ]
    name, mode = _WATCHED[kind]
    shown = {"auc": "AUC", "accuracy": "accuracy", "rmse": "RMSE"}[name]
    ref, live = (out["reference"] or {}).get(name), out["metrics"].get(name)
    if ref is not None and live is not None:
        if mode == "max":
            out["drifted"] = live < ref - cfg.performance_drop
            how = f"{'more' if out['drifted'] else 'no more'} than {cfg.performance_drop:g} below"
        else:
            out["drifted"] = live > ref * (1 + cfg.performance_drop)
            how = f"{'more' if out['drifted'] else 'no more'} than {cfg.performance_drop:.0%} above"
        out["message"] = f"labelled {shown} {live:.4f} on {len(y)} rows vs validation {shown} {ref:.4f} ({how})"
    else:
        out["drifted"] = False
        out["message"] = f"{len(y)} labelled rows; no validation {shown} to compare with"
    return out


def compare(
    ref: Table,
    cur: Table,
    cfg: DriftConfig = DriftConfig(),
    *,
    model: tuple[str, str] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Compare two resolved tables (see the module docstring); returns the drift.json dict.

    Args:
        ref: the reference (training data).
        cur: the current data (a log window or any table).
        cfg: thresholds and the tests that decide.
        model: (name, version) whose validation metrics performance is compared with and whose scores on the
            reference give prediction drift; default: the one version of a log window, if it has one.
        tracking_uri: the MLflow server (for the model).
    """
    import ray

    started = time.time()
    labels = read_feedback(cur) if cur.is_log else None
    wanted = cfg.features or ref.features + [f for f in cur.features if f not in ref.features]
    absent = {
        f: {
            "kind": "absent",
            "drifted": False,
            "severity": 0.0,
            "message": "not in the reference" if f not in ref.columns else "not in the current table",
        }
        for f in wanted
        if f not in ref.columns or f not in cur.columns
    }
    both = [f for f in wanted if f not in absent]
    if not both:
        raise DataContractError(
            f"{ref.description} and {cur.description} share no feature to compare "
            f"(reference: {ref.features[:10]}; current: {cur.features[:10]})"
        )
    kinds = {
        f: "categorical"
        if _is_categorical(f, ref.columns[f], ref, cfg) or _is_categorical(f, cur.columns[f], cur, cfg)
        else "numeric"
        for f in both
    }
    extra = ["prediction", "probabilities", "label", "ts", "version", "model"]
    ref_refs = _read(ref, both + [c for c in ("prediction",) if c in ref.columns], None)
    cur_refs = _read(cur, both + extra, labels)
    task = ray.remote(_feature_task).options(num_cpus=1)
    pending = {f: task.remote(f, kinds[f], ref_refs, cur_refs) for f in both}

    # The current side's log fields, for prediction and performance drift (a few columns, in the driver).
    cur_blocks, ref_blocks = ray.get(cur_refs), ray.get(ref_refs)
    cur_rows = sum(b.num_rows for b in cur_blocks)
    ref_rows = sum(b.num_rows for b in ref_blocks)
    side: dict[str, np.ndarray] = {}
    for c in ("prediction", "label"):
        if any(c in b.column_names for b in cur_blocks):
            side[c] = _column(cur_blocks, c).cast(pa.float64()).to_numpy()
    if any("probabilities" in b.column_names for b in cur_blocks):  # a multiclass model's log
        probabilities = _column(cur_blocks, "probabilities")
        side["probabilities"] = np.asarray(probabilities.to_pylist(), dtype=np.float64).reshape(cur_rows, -1)
    if any("ts" in b.column_names for b in cur_blocks):
        side["ts"] = _column(cur_blocks, "ts").cast(pa.timestamp("us")).to_numpy()
    if any("version" in b.column_names for b in cur_blocks):
        version_col = _column(cur_blocks, "version")
        if model is None:
            versions = set(version_col.unique().to_pylist()) - {None}
            models = set(_column(cur_blocks, "model").unique().to_pylist()) if cur.is_log else set()
            if len(versions) == 1 and len(models) == 1:
                model = (models.pop(), versions.pop())
        if model is not None:
            # Scores and labelled quality are the model's own: rows another version answered are left out.
            mine = np.asarray(version_col.to_pylist(), dtype=object) == model[1]
            side = {k: v[mine] for k, v in side.items()}

    if model is not None and tracking_uri is None:
        # Resolved here, in the driver: a Ray task's MLflow would fall back to a local ./mlruns store.
        tracking_uri = registry.client().tracking_uri
    prediction = None
    if "prediction" in side:
        if "prediction" in ref.columns:
            ref_scores = _column(ref_blocks, "prediction").cast(pa.float64()).to_numpy()
        elif model is not None:
            score = ray.remote(_score_task).options(num_cpus=1)
            ref_scores = ray.get(score.remote(model[0], model[1], tracking_uri, both, ref_refs))
        else:
            ref_scores = None
        if ref_scores is not None:
            prediction = decide(numeric_stats(ref_scores, side["prediction"]), "numeric", cfg)

    features = {f: decide(s, kinds[f], cfg) for f, s in zip(pending, ray.get(list(pending.values())), strict=True)}
    features.update(absent)
    features = dict(sorted(features.items(), key=lambda kv: -kv[1]["severity"]))
    return {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.time() - started, 3),
        "reference": {"path": ref.description, "rows": ref_rows, "dataset": ref.dataset, "skipped": ref.skipped},
        "current": {
            "path": cur.description,
            "rows": cur_rows,
            "files": len(cur.files),
            "skipped": cur.skipped,
            "window": cur.window,
            "labelled": int((~np.isnan(side["label"])).sum()) if "label" in side else 0,
        },
        "model": {"name": model[0], "version": model[1]} if model else None,
        "config": cfg.model_dump(mode="json"),
        "verdict": _verdict(features, cfg, cur_rows),
        "features": features,
        "prediction": prediction,
        "performance": _performance(side, model, tracking_uri, cfg),
    }


def drift(
    reference: str,
    current: str | Sequence[str],
    cfg: DriftConfig = DriftConfig(),
    *,
    since: timedelta | None = None,
    until: datetime | None = None,
    log_root: str | None = None,
    model: tuple[str, str] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Resolve `reference` and `current` (a dataset version, any Parquet path, or ``log:<app>``) and compare them.

    Needs a Ray runtime (``ray.init()`` joins the platform, or starts a local one).

    Raises:
        ConfigError: a path does not exist.
        DataContractError: nothing readable, an empty window, or no feature in common.
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    quiet_ray_data()
    ref = resolve(reference)
    if isinstance(current, str):
        cur = resolve(current, log_root=log_root, since=since, until=until)
    else:  # explicit partition folders or files of one table
        parts = [resolve(p) for p in current]
        cur = parts[0]
        for p in parts[1:]:
            cur.files += p.files
            cur.skipped += p.skipped
        cur.description = ", ".join(current)
    return compare(ref, cur, cfg, model=model, tracking_uri=tracking_uri)


def write_outputs(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``drift.json`` and ``report.html`` into `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "drift.json"
    path.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return path, write_report(result, out / "report.html")


def _metric_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in text)[:250]


def log_to_mlflow(
    result: dict[str, Any], files: Sequence[Path], *, tracking_uri: str | None = None, parent: str | None = None
) -> str:
    """Record a drift run: every statistic as a metric, drift.json and the report as artifacts, tags linking the
    model version and dataset version (and the model version tagged back with this run). Returns its run id."""
    client = registry.client(tracking_uri)
    experiment = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(DRIFT_EXPERIMENT)
    model = result.get("model") or {}
    tags = {
        "mlflow.runName": f"drift-{model.get('name') or 'tables'}",
        "mlplatform.drift.verdict": str(result["verdict"]["drifted"]),
        "mlplatform.drift.reference": str(result["reference"]["path"])[:5000],
        "mlplatform.drift.current": str(result["current"]["path"])[:5000],
        "mlplatform.drift.features": ",".join(result["verdict"]["drifted_features"])[:5000],
    }
    if result["reference"].get("dataset"):
        tags["mlplatform.dataset.version"] = result["reference"]["dataset"]
    if model:
        tags["mlplatform.model.name"], tags["mlplatform.model.version"] = model["name"], model["version"]
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    metrics = {"drift_share": float(result["verdict"]["share"])}
    for name, s in result["features"].items():
        for stat in ("ks", "ks_pvalue", "psi", "js", "chi2", "chi2_pvalue"):
            if isinstance(s.get(stat), (int, float)) and math.isfinite(s[stat]):
                metrics[_metric_name(f"{name}.{stat}")] = float(s[stat])
    for part in ("prediction",):
        for stat in ("ks", "psi", "js"):
            value = (result.get(part) or {}).get(stat)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{part}.{stat}"] = float(value)
    for k, v in ((result.get("performance") or {}).get("metrics") or {}).items():
        if isinstance(v, (int, float)) and math.isfinite(v):
            metrics[f"live_{k}"] = float(v)
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 900):
        client.log_batch(run_id, metrics=items[i : i + 900])
    for f in files:
        client.log_artifact(run_id, str(f), "drift")
    client.set_terminated(run_id)
    if model:
        try:
            client.set_model_version_tag(model["name"], model["version"], "mlplatform.drift.last_run", run_id)
        except Exception as exc:  # the run is recorded; the back-link from the version is a convenience
            logging.getLogger(__name__).warning(
                "could not tag %s v%s with drift run %s: %s", *model.values(), run_id, exc
            )
    return run_id


_GAUGES: dict[str, Any] = {}


def export_gauges(result: dict[str, Any], app: str) -> None:
    """Set Prometheus gauges (through Ray's metrics agent) for each feature's deciding statistic and the share."""
    from ray.util.metrics import Gauge

    if not _GAUGES:
        _GAUGES["score"] = Gauge(
            "mlplatform_drift_score", "Drift statistic of a feature (its deciding test).", ("app", "feature", "test")
        )
        _GAUGES["drifted"] = Gauge("mlplatform_drift_drifted", "1 when a feature drifted.", ("app", "feature"))
        _GAUGES["share"] = Gauge("mlplatform_drift_share", "Weighted share of drifted features.", ("app",))
    for name, s in result["features"].items():
        if s.get("score") is not None:
            _GAUGES["score"].set(float(s["score"]), tags={"app": app, "feature": name, "test": s["test"]})
        _GAUGES["drifted"].set(1.0 if s["drifted"] else 0.0, tags={"app": app, "feature": name})
    _GAUGES["share"].set(float(result["verdict"]["share"]), tags={"app": app})
