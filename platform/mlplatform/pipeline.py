"""The lifecycle steps as jobs run them: ingest → train → deploy (and rollout), each printing a short report.

`jobs/*.py` and `mlplatform run` call `run_job(name, config)`; everything here runs on whatever Ray
cluster the process is connected to. The configs of the jobs (`PipelineConfig`, `RolloutJobConfig`) compose
the sections each layer defines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mlplatform import registry
from mlplatform.cluster import quiet_ray_data
from mlplatform.data.ingest import DatasetVersion, ingest, load_version
from mlplatform.errors import ConfigError, PlatformError, RolloutFailedError
from mlplatform.job_configs import JobOptions, MonitorJobConfig, PipelineConfig, RolloutJobConfig, config_model
from mlplatform.monitor.config import parse_duration
from mlplatform.monitor.loop import PassResult, Retrained, run_loop
from mlplatform.monitor.online import log_judge
from mlplatform.release.config import RolloutConfig
from mlplatform.release.deploy import Deployment, deploy
from mlplatform.release.rollout import RolloutResult, cluster_stats, run_rollout
from mlplatform.release.traffic import TrafficControl
from mlplatform.serve.batch import BatchResult, parse_model_ref, score
from mlplatform.settings import platform_home
from mlplatform.train.register import RegisteredVersion, config_hash, log_and_register, open_search
from mlplatform.train.search import (
    check_table,
    errors_summary,
    experiment_name,
    latest_experiment,
    load_training_data,
    resolve_mode,
    search,
)

__all__ = [
    "PipelineConfig",
    "RolloutJobConfig",
    "MonitorJobConfig",
    "STEPS",
    "JobOptions",
    "run_job",
    "config_model",
    "ingest_step",
    "train_step",
    "deploy_step",
    "pipeline",
    "rollout_step",
    "monitor_step",
]

log = logging.getLogger(__name__)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [cells[0], ["-" * w for w in widths], *cells[1:]])


def ingest_step(cfg: PipelineConfig, opts: JobOptions = JobOptions()) -> DatasetVersion:
    started = time.time()
    version = ingest(cfg.data)
    m = version.manifest
    rows = [
        [
            name,
            len(s["files"]),
            s.get("bad_files", 0),
            s["in"],
            s["ok"],
            s["quarantined"],
            "yes" if s["in"] == s["ok"] + s["quarantined"] else "NO",
        ]
        for name, s in m["sources"].items()
    ]
    print("\n== ingest: in = ok + quarantined records per source (a bad file counts the records it held, if known)")
    print(_table(rows, ["source", "files", "bad files", "in", "ok", "quarantined", "balanced"]))
    print(
        f"dataset {m['name']} version {version.version}{' (reused: inputs unchanged)' if version.reused else ''}"
        f": {m['rows']} rows x {len(m['features'])} features, fingerprint {version.fingerprint[:16]}"
    )
    print(
        f"  table:      {version.table_path}\n  quarantine: {version.quarantine_path}\n"
        f"  profile:    {version.profile_path}  ({time.time() - started:.1f}s)"
    )
    skipped = sum(len(v) for v in (m.get("skipped") or {}).values())
    if skipped:
        print(f"  skipped:    {skipped} hidden or temporary file(s), e.g. _temporary/ (listed in the manifest)")
    if not version.reused and m.get("seconds_by_step"):
        print("  seconds:    " + ", ".join(f"{step} {sec:.1f}" for step, sec in m["seconds_by_step"].items()))
    return version


def train_step(
    cfg: PipelineConfig, opts: JobOptions = JobOptions(), dataset: DatasetVersion | None = None
) -> list[RegisteredVersion]:
    if cfg.train is None:
        raise ConfigError("the config has no `train` section")
    if dataset is None:
        dataset = load_version(cfg.train.dataset) if cfg.train.dataset else ingest(cfg.data)
    started = time.time()
    check_table(dataset)
    mode = resolve_mode(cfg.train, dataset.rows)
    # Data-parallel trials read the table in their workers; the driver keeps held-out rows for the gate.
    data = load_training_data(
        dataset, validation_only=mode == "data_parallel", max_rows=None if mode == "per_trial" else 500_000
    )
    storage = cfg.train.storage_path or str(platform_home() / "tune")
    prefix = experiment_name(cfg.train, dataset, config_hash(cfg.train))
    if opts.resume:
        name = latest_experiment(storage, prefix)
        if name is None:
            raise PlatformError(
                f"--resume: no earlier search of this train config on dataset {dataset.version} under {storage} "
                f"(looked for {prefix}-*)"
            )
        print(f"resuming search {name}")
    else:
        name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    data.task.params(cfg.train.params)  # an objective of another task fails here, before any trial
    live = open_search(cfg.train, dataset, config_hash(cfg), name)
    print(f"search {name}: each trial's metrics in MLflow as it reports (run {live.parent_run_id})")
    try:
        outcomes = search(
            cfg.train,
            data,
            storage_path=storage,
            name=name,
            resume=opts.resume,
            mode=mode,
            dataset=dataset,
            callbacks=[live],
        )
    except BaseException:
        live.client.set_terminated(live.parent_run_id, "FAILED")
        raise
    metric = data.task.metric
    registered, decision = log_and_register(
        cfg.train,
        outcomes,
        data,
        dataset,
        pipeline_config_hash=config_hash(cfg),
        parent_run_id=live.parent_run_id,
        search=name,
    )
    rows = [
        [
            o.trial_id,
            o.metrics.get("round", "-"),
            f"{o.metrics.get(metric, float('nan')):.4f}",
            " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in o.config.items()
                if k in cfg.train.search_space
            ),
            "failed" if o.error else "",
        ]
        for o in outcomes
    ]
    trials = f"{len(outcomes)} trial{'' if len(outcomes) == 1 else 's'}"
    print(
        f"\n== train: {trials} ({cfg.train.search_alg} search, {cfg.train.scheduler} scheduler, "
        f"{mode.replace('_', '-')})"
    )
    print(_table(rows, ["trial", "rounds", metric, "params", "error"]))
    if errors_summary(outcomes):
        print(errors_summary(outcomes))
    for r in registered:
        print(
            f"registered {r.name} version {r.version} {metric}={r.metrics.get(metric, float('nan')):.4f}"
            f"{' aliases=' + ','.join(r.aliases) if r.aliases else ''}"
        )
    print(f"gate for v{registered[0].version} {decision.summary()}")
    print(f"  ({time.time() - started:.1f}s)")
    return registered


def deploy_step(cfg: PipelineConfig, opts: JobOptions = JobOptions()) -> Deployment:
    if cfg.deploy is None:
        raise ConfigError("the config has no `deploy` section")
    started = time.time()
    d = deploy(cfg.deploy.serve_config, cfg.deploy.application)
    print(f"\n== deploy: application {d.app_name!r} at {d.url} ({time.time() - started:.1f}s)")
    print(_table([[f"v{v}", f"{w:g}%"] for v, w in d.weights.items()], ["version", "weight"]))
    print(f"try: {d.curl()}")
    return d


def pipeline(cfg: PipelineConfig, opts: JobOptions = JobOptions()) -> Deployment | DatasetVersion:
    dataset = ingest_step(cfg)
    if cfg.train is not None:
        train_step(cfg, opts, dataset)
    if cfg.deploy is not None:
        return deploy_step(cfg)
    return dataset


def rollout_step(cfg: RolloutJobConfig | None, opts: JobOptions = JobOptions()) -> RolloutResult:
    control = TrafficControl()
    app = opts.resume_app or (cfg.rollout.app if cfg is not None else None)
    if app is None:
        raise ConfigError("the rollout job needs --config, or --resume-app APP to continue an interrupted rollout")
    state = None
    if opts.resume or opts.resume_app:
        state = control.rollout(app)
        if state is None:
            raise PlatformError(f"no interrupted rollout in {app!r} to resume (`mlplatform rollout status {app}`)")
        print(f"resuming {state.describe(time.time())}")
    rollout_cfg = RolloutConfig.model_validate(state.config) if state is not None else cfg.rollout  # type: ignore[union-attr]
    model = control.served(app).args.model_name
    judge = _judge(control, model, rollout_cfg)
    result = run_rollout(rollout_cfg, control, cluster_stats(model), resume=state, online=judge)
    _print_rollout(result)
    if not result.succeeded:
        raise RolloutFailedError(result.reason)
    return result


def _judge(control: TrafficControl, model: str, cfg: RolloutConfig, *, root: str | None = None) -> Any:
    """The online test of a rollout, for the task of the version rolled out (None: the rollout has none)."""
    if cfg.online_test is None:
        return None
    task = registry.model_task(model, control.resolve(model, cfg.canary))
    return log_judge(cfg.app, cfg.online_test, root=root, task=task)


def _print_rollout(result: RolloutResult) -> None:
    print(f"\n== rollout of v{result.canary} in {result.app!r}: {'done' if result.succeeded else 'ROLLED BACK'}")
    print(
        _table(
            [
                [
                    f"{s.percent:g}%",
                    s.canary["requests"],
                    s.canary["error_rate"],
                    s.canary["p99_ms"],
                    s.stable["requests"],
                    s.stable["error_rate"],
                    s.stable["p99_ms"],
                    (s.online or {}).get("decision", "-"),
                    s.verdict,
                ]
                for s in result.steps
            ],
            ["step", "canary req", "err", "p99 ms", "stable req", "err", "p99 ms", "online test", "verdict"],
        )
    )
    for s in result.steps:
        if s.online:
            print(f"  {s.percent:g}% online test: {s.online['message']}")


def monitor_step(cfg: MonitorJobConfig, opts: JobOptions = JobOptions()) -> PassResult:
    control = TrafficControl()
    pipeline_cfg = PipelineConfig(data=cfg.data, train=cfg.train)

    def retrain() -> Retrained:
        dataset = ingest_step(pipeline_cfg)
        best = train_step(pipeline_cfg, JobOptions(), dataset)[0]
        version = registry.client().get_model_version(best.name, best.version)
        gate = (version.description or "").removeprefix("gate ")
        return Retrained(dataset.path, best.version, best.run_id, best.aliases, gate)

    def rollout(rollout_cfg: RolloutConfig, origin: dict[str, Any]) -> RolloutResult:
        model = control.served(rollout_cfg.app).args.model_name
        judge = _judge(control, model, rollout_cfg, root=cfg.monitor.log_path)
        result = run_rollout(rollout_cfg, control, cluster_stats(model), online=judge, origin=origin)
        _print_rollout(result)
        return result

    result = run_loop(
        cfg.monitor,
        retrain=retrain,
        rollout=rollout,
        force=opts.force,
        every=parse_duration(opts.every) if opts.every else None,
        control=control,
    )
    print(f"\n== monitor: {result.outcome}")
    if result.drift_dir:
        print(f"  drift report: {result.drift_dir}/report.html")
    return result


def predict_step(
    model: str,
    input_path: str,
    out: str,
    *,
    key: str | None = None,
    concurrency: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0.0,
    distributed: bool = False,
) -> BatchResult:
    """Batch scoring (`mlplatform predict`, jobs/predict.py): every row of a file, Parquet out."""
    quiet_ray_data()
    result = score(
        parse_model_ref(model),
        input_path,
        out,
        key=key,
        concurrency=concurrency,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        distributed=distributed,
    )
    print(
        f"\n== predict: {result.rows} rows scored by {result.model} (v{result.version}) in {result.seconds:.1f}s "
        f"({result.rows_per_s:,.0f} rows/s) -> {result.out}"
    )
    if result.errors:
        print(f"  {result.errors} row(s) could not be scored: prediction null, the reason in their `error` column")
    return result


#: Each job's step (its config model is `mlplatform.job_configs.JOB_CONFIGS[job]`).
STEPS: dict[str, Callable[[Any, JobOptions], Any]] = {
    "ingest": ingest_step,
    "train": train_step,
    "deploy": deploy_step,
    "pipeline": pipeline,
    "rollout": rollout_step,
    "monitor": monitor_step,
}


def run_job(name: str, cfg: Any, opts: JobOptions = JobOptions()) -> Any:
    """Run one job on the Ray cluster this process is (or will be) connected to."""
    import ray

    config_model(name)
    if not ray.is_initialized():
        ray.init()  # inside `ray job submit` this joins the job's cluster; alone it starts a local one
    quiet_ray_data()
    return STEPS[name](cfg, opts)
