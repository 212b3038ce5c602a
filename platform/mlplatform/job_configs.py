"""The configs of the jobs (`jobs/*.py`, `mlplatform submit`) and their command-line options.

Apart from the steps (`mlplatform.pipeline`) so that checking a config before submitting it — what the CLI does
on a laptop — imports pydantic models only, not Ray Tune, Serve and MLflow (1.5 s of every `mlplatform submit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, model_validator

from mlplatform.config import StrictModel, load_config
from mlplatform.data.config import DataConfig
from mlplatform.errors import ConfigError
from mlplatform.monitor.config import MonitorConfig
from mlplatform.release.config import DeployConfig, RolloutConfig
from mlplatform.train.config import TrainConfig

__all__ = ["PipelineConfig", "RolloutJobConfig", "MonitorJobConfig", "JobOptions", "JOB_CONFIGS", "config_model"]


class PipelineConfig(StrictModel):
    """ingest → train → deploy: the config of jobs/pipeline.py and of each step's job."""

    data: DataConfig
    train: TrainConfig | None = None
    deploy: DeployConfig | None = None


class RolloutJobConfig(StrictModel):
    """The config of jobs/rollout.py."""

    rollout: RolloutConfig


class MonitorJobConfig(StrictModel):
    """The config of jobs/monitor.py (`mlplatform monitor`): the loop, and the data and training it retrains with.

    ``pipeline: <file>`` takes `data` and `train` from a pipeline config (the one that trained the champion),
    so both stay one file; sections given here win.
    """

    monitor: MonitorConfig
    pipeline: str | None = None
    data: DataConfig
    train: TrainConfig

    @model_validator(mode="before")
    @classmethod
    def _from_pipeline(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("pipeline"), str):
            try:
                base = load_config(data["pipeline"], PipelineConfig)
            except ConfigError as exc:
                raise ValueError(f"pipeline {data['pipeline']}: {exc}") from None
            data = {
                **{k: getattr(base, k).model_dump() for k in ("data", "train") if getattr(base, k) is not None},
                **data,
            }
        return data


@dataclass(frozen=True)
class JobOptions:
    """Command-line options of a job beyond its config."""

    #: train/pipeline: finish the latest interrupted search of this config and dataset; rollout: continue the
    #: interrupted rollout of the config's application.
    resume: bool = False
    #: rollout: continue the interrupted rollout of this application, with the config it started with.
    resume_app: str | None = None
    #: monitor: repeat the pass this often (e.g. "10m"); None: one pass.
    every: str | None = None
    #: monitor: retrain even if nothing fired.
    force: bool = False


#: Each job's config model.
JOB_CONFIGS: dict[str, type[BaseModel]] = {
    "ingest": PipelineConfig,
    "train": PipelineConfig,
    "deploy": PipelineConfig,
    "pipeline": PipelineConfig,
    "rollout": RolloutJobConfig,
    "monitor": MonitorJobConfig,
}


def config_model(job: str) -> type[BaseModel]:
    """The config model of a job's YAML file."""
    if job not in JOB_CONFIGS:
        raise ConfigError(f"unknown job {job!r}; choose one of {sorted(JOB_CONFIGS)}")
    return JOB_CONFIGS[job]
