"""Typed configs for every YAML file mlplatform reads, and `load_config` whose errors name file + field.

Every model forbids unknown keys, so a typo fails before anything is submitted instead of being ignored.
String values may reference environment variables as ``${NAME}``; ``${MLPLATFORM_HOME}`` defaults to the
local state folder so that the same config works from a laptop and inside a Ray job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlplatform.errors import ConfigError
from mlplatform.settings import platform_home

__all__ = [
    "StrictModel",
    "FieldSpec",
    "FeatureSpec",
    "SourceSpec",
    "DataConfig",
    "ParamSpec",
    "GateConfig",
    "TrainConfig",
    "DeployConfig",
    "PipelineConfig",
    "RolloutConfig",
    "RolloutJobConfig",
    "load_config",
    "parse_config",
    "read_yaml",
]

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- data


class FieldSpec(StrictModel):
    """The contract for one field of a source record."""

    type: Literal["int", "float", "str", "bool", "timestamp"] = Field(
        description="Logical type; values are cast to it. timestamp: ISO 8601 text or epoch seconds, kept as "
        "epoch seconds (UTC)."
    )
    path: str | None = Field(
        None, description="Dotted path of the value in a nested JSON record (default: the field name)."
    )
    required: bool = Field(True, description="A missing or null value quarantines the record.")
    min: float | None = Field(None, description="Smallest allowed value (numeric types).")
    max: float | None = Field(None, description="Largest allowed value (numeric types).")
    allowed: list[str | int | float] | None = Field(None, description="The only values allowed.")
    pattern: str | None = Field(None, description="Regular expression a str value must match entirely.")
    max_age_days: float | None = Field(
        None, gt=0, description="timestamp: values older than this at ingest time are quarantined as stale."
    )
    unique: bool = Field(False, description="Every record of the source must have its own value (e.g. a key).")

    @model_validator(mode="after")
    def _check_range(self) -> FieldSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max apply to int and float fields, not to type {self.type!r}")
        if self.pattern is not None:
            if self.type != "str":
                raise ValueError(f"pattern applies to str fields, not to type {self.type!r}")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        if self.max_age_days is not None and self.type != "timestamp":
            raise ValueError(f"max_age_days applies to timestamp fields, not to type {self.type!r}")
        return self


class FeatureSpec(StrictModel):
    """A per-entity feature aggregated from a source with many records per key."""

    name: Identifier = Field(description="Column name in the training table.")
    agg: Literal["count", "sum", "mean", "min", "max", "std", "slope", "last"] = Field(
        description="Aggregation; `slope` is the least-squares trend of `column` over `time_column`, `last` the "
        "value of `column` at the latest `time_column`."
    )
    column: str | None = Field(None, description="Aggregated field (not used by `count`).")
    time_column: str | None = Field(None, description="Time axis for `slope`, `last` and `window`.")
    window: float | None = Field(
        None,
        gt=0,
        description="Only records within this much of the entity's latest `time_column` value count (in that "
        "column's units: days for a day index, seconds for a timestamp). E.g. slope over the last 7 days.",
    )

    @model_validator(mode="after")
    def _check_columns(self) -> FeatureSpec:
        if self.agg != "count" and not self.column:
            raise ValueError(f"agg {self.agg!r} needs `column`")
        if self.agg in ("slope", "last") and not self.time_column:
            raise ValueError(f"agg {self.agg!r} needs `time_column`")
        if self.window is not None and not self.time_column:
            raise ValueError("`window` needs `time_column`")
        return self


#: The raw fields a text source's reader makes of each document, and an image source's of each image.
TEXT_FIELDS = ("chars", "tokens", "lines")
IMAGE_FIELDS = ("width", "height", "channels", "brightness", "contrast")


class SourceSpec(StrictModel):
    """One raw input: where it is, how to read it, its contract and the features it feeds."""

    name: Identifier = Field(description="Source name, used in reports and quarantine output.")
    format: Literal["csv", "jsonl", "parquet", "text", "image"] = Field(
        description="File format. text: a document per file or per line, read as fields "
        f"{', '.join(TEXT_FIELDS)}. image: any format Pillow decodes, read as fields {', '.join(IMAGE_FIELDS)}."
    )
    path: str = Field(description="File, folder or glob; local path or URI.")
    path_fields: str | None = Field(
        None,
        description="text and image: a regular expression searched in each file's path whose named groups are "
        r"fields of the file's records, e.g. '(?P<entity_id>\d+)\.txt$' (whose document it is) or "
        r"'/(?P<label>cat|dog)/' (a label from the folder).",
    )
    text_unit: Literal["file", "line"] = Field("file", description="text: one document per file or per line.")
    fields: dict[str, FieldSpec] = Field(min_length=1, description="Contract of each field kept.")
    features: list[FeatureSpec] = Field(
        default_factory=list,
        description="Aggregations per key. Empty means one row per key: the fields are features as they are.",
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail the job when more than this share of records is quarantined."
    )

    @model_validator(mode="after")
    def _check_feature_columns(self) -> SourceSpec:
        if self.format in ("text", "image"):
            if not self.path_fields:
                raise ValueError(f"a {self.format} source needs `path_fields` to say whose each file is")
            try:
                groups = set(re.compile(self.path_fields).groupindex)
            except re.error as exc:
                raise ValueError(f"path_fields {self.path_fields!r} is not a valid regular expression: {exc}") from None
            known = groups | set(TEXT_FIELDS if self.format == "text" else IMAGE_FIELDS)
            unknown = sorted(set(self.fields) - known)
            if unknown:
                raise ValueError(
                    f"fields {unknown} are neither read from a {self.format} file nor named groups of path_fields; "
                    f"available: {sorted(known)}"
                )
        elif self.path_fields:
            raise ValueError("path_fields applies to text and image sources")
        for i, feature in enumerate(self.features):
            for attr in ("column", "time_column"):
                col = getattr(feature, attr)
                if col is not None and col not in self.fields:
                    raise ValueError(
                        f"features[{i}] ({feature.name}): {attr} {col!r} is not one of the source's fields "
                        f"{sorted(self.fields)}"
                    )
        return self


class DataConfig(StrictModel):
    """Sources joined on one key into a versioned training table."""

    name: Identifier = Field(description="Dataset name; versions live under output_dir/name/.")
    key: str = Field(description="Entity id present in every source.")
    label: str = Field(description="Binary label field, present in exactly one source with no features.")
    output_dir: str = Field(description="Root of dataset versions and quarantine output.")
    sources: list[SourceSpec] = Field(min_length=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out share, split by key hash.")

    @model_validator(mode="after")
    def _check_keys(self) -> DataConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        for source in self.sources:
            if self.key not in source.fields:
                raise ValueError(f"join key {self.key!r} is not a field of source {source.name!r}")
        holders = [s.name for s in self.sources if self.label in s.fields]
        if len(holders) != 1:
            raise ValueError(f"label {self.label!r} must be a field of exactly one source, found in {holders}")
        base = next(s for s in self.sources if s.name == holders[0])
        if base.features:
            raise ValueError(f"source {base.name!r} holds the label, so it must have one row per key (no features)")
        return self

    @property
    def base_source(self) -> SourceSpec:
        """The source holding the label: one row per key, the left side of every join."""
        return next(s for s in self.sources if self.label in s.fields)


# -------------------------------------------------------------------------------------------- train


class ParamSpec(StrictModel):
    """A search-space dimension."""

    type: Literal["uniform", "loguniform", "quniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty `values` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.type == "quniform" and not self.q:
            raise ValueError("quniform needs `q`")
        return self


class GateConfig(StrictModel):
    """The promotion gate: what a candidate must show on the held-out split before it gets an alias.

    Against a champion: the primary metric (``val_auc``) must improve by at least ``min_delta`` and no guard
    may regress beyond its tolerance. With no champion yet, the absolute thresholds decide.
    """

    min_delta: float = Field(0.001, ge=0, description="Least val_auc improvement over the champion.")
    max_logloss_increase: float = Field(0.01, ge=0, description="Guard: val log loss may rise by at most this.")
    max_calibration_error_increase: float = Field(
        0.02, ge=0, description="Guard: expected calibration error (10 bins) may rise by at most this."
    )
    max_latency_ratio: float = Field(
        2.0, ge=1, description="Guard: p99 predict latency of a batch may be at most this × the champion's."
    )
    latency_batch_rows: int = Field(256, ge=1, description="Rows of the batch whose predict latency is timed.")
    min_auc: float = Field(0.6, ge=0, le=1, description="Absolute: least val_auc of a first champion.")
    max_calibration_error: float = Field(0.1, ge=0, le=1, description="Absolute: largest ECE of a first champion.")


class TrainConfig(StrictModel):
    """An XGBoost hyperparameter search with Ray Tune, and what to register from it."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Registered model name in MLflow.")
    experiment: str = Field(description="MLflow experiment of the search runs.")
    num_boost_round: int = Field(50, ge=1, le=10_000)
    report_every: int = Field(10, ge=1, description="Rounds between reports to Tune (ASHA rungs, checkpoints).")
    num_samples: int = Field(4, ge=1, description="Trials to sample (grid: repetitions of the whole grid).")
    max_concurrent_trials: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0, description="Also XGBoost's nthread (rounded up).")
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed XGBoost params.")
    search_space: dict[str, ParamSpec] = Field(default_factory=dict)
    search_alg: Literal["random", "grid", "optuna"] = Field(
        "random", description="random sampling, the grid of every `choice`/`randint` value, or Optuna's TPE."
    )
    scheduler: Literal["asha", "pbt", "fifo"] = Field(
        "asha", description="ASHA stops weak trials early; PBT mutates continuous params of weak trials; fifo none."
    )
    asha_reduction_factor: int = Field(
        3, ge=2, description="ASHA keeps 1/this of the trials at each rung (2 keeps more, 4 stops more)."
    )
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial, each from its last checkpoint.")
    mode: Literal["auto", "per_trial", "data_parallel"] = Field(
        "auto",
        description="per_trial: one process per trial (the table fits a worker); data_parallel: Ray Train's "
        "XGBoostTrainer over num_workers; auto: data_parallel above max_rows_per_trial rows.",
    )
    num_workers: int = Field(2, ge=1, description="Workers of one data-parallel trial.")
    max_rows_per_trial: int = Field(2_000_000, ge=1, description="auto mode: largest table trained per trial.")
    dataset: str | None = Field(
        None,
        description="Folder of an existing dataset version to train on (default: ingest `data`, reusing the "
        "version when the inputs are unchanged).",
    )
    register_top: int = Field(1, ge=1, description="Register the best N trials as model versions.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Who gets the champion/challenger alias.")
    storage_path: str | None = Field(
        None,
        description="Where Tune keeps trial checkpoints: a local folder or a URI such as s3://bucket/tune "
        "(shared storage is needed on a multi-node cluster). Default: $MLPLATFORM_HOME/tune.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        overlap = set(self.params) & set(self.search_space)
        if overlap:
            raise ValueError(f"{sorted(overlap)} appear in both params and search_space")
        if self.search_alg == "grid":
            continuous = sorted(n for n, p in self.search_space.items() if p.type not in ("choice", "randint"))
            if continuous:
                raise ValueError(f"grid search needs choice or randint dimensions; {continuous} are continuous")
        if self.scheduler == "pbt" and self.search_alg != "random":
            raise ValueError("pbt explores by mutating trials; use it with search_alg random")
        if self.report_every > self.num_boost_round:
            raise ValueError(f"report_every ({self.report_every}) exceeds num_boost_round ({self.num_boost_round})")
        return self


# ------------------------------------------------------------------------------------------- deploy


class DeployConfig(StrictModel):
    """Which Serve config to apply after training."""

    serve_config: str = Field(description="Path of a Ray Serve config file (serve_configs/*.yaml).")
    application: str | None = Field(None, description="Application in that file (default: the only one).")


class RolloutConfig(StrictModel):
    """A progressive rollout: move traffic to a canary step by step, judge each step, roll back on a breach."""

    app: str = Field(description="Serve application to roll out in.")
    canary: str = Field(description="Version (or registry alias) to roll out.")
    stable: str | None = Field(None, description="Version compared with (default: the one with most traffic).")
    steps: list[float] = Field([1, 10, 50, 100], min_length=1, description="Canary percent at each step.")
    bake_s: float = Field(30, ge=1, description="Seconds each step runs before it is judged.")
    min_requests: int = Field(20, ge=1, description="Canary requests a step needs before it can be judged.")
    max_wait_s: float | None = Field(
        None, description="Longest a step waits for min_requests (default 4 × bake_s); then it rolls back."
    )
    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1, description="Largest tolerated canary error rate above the stable version's."
    )
    max_p99_ratio: float = Field(1.5, ge=1, description="Largest tolerated canary p99 latency / stable p99.")
    p99_slack_ms: float = Field(5, ge=0, description="p99 differences below this many ms never count as a breach.")
    promote: bool = Field(True, description="At 100 %, make the canary the champion (old one becomes `previous`).")

    @model_validator(mode="after")
    def _check_steps(self) -> RolloutConfig:
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps must be percents in (0, 100], got {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {self.steps}")
        if self.steps[-1] != 100:
            raise ValueError(f"the last step must be 100, got {self.steps[-1]:g}")
        return self


class RolloutJobConfig(StrictModel):
    """The config of jobs/rollout.py."""

    rollout: RolloutConfig


class PipelineConfig(StrictModel):
    """ingest → train → deploy, the config of jobs/pipeline.py and of each step's job."""

    data: DataConfig
    train: TrainConfig | None = None
    deploy: DeployConfig | None = None


# ------------------------------------------------------------------------------------------ loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, loc: tuple[Any, ...], source: str) -> Any:
    """Expand ${VAR} in every string, failing on an unset variable with its field path."""
    if isinstance(value, dict):
        return {k: _expand(v, (*loc, k), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*loc, i), source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "MLPLATFORM_HOME":
            return str(platform_home())
        if name not in os.environ:
            raise ConfigError(f"{source}: {_dotted(loc)}: environment variable ${{{name}}} is not set")
        return os.environ[name]

    return _VAR.sub(sub, value)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def parse_config(raw: Any, model: type[ModelT], source: str = "<config>") -> ModelT:
    """Validate an already-parsed mapping; errors name `source` and each field path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(_expand(raw, (), source))
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not allowed here; check its spelling)"
            got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err.get('input')!r:.80})"
            lines.append(f"  {source}: {_dotted(tuple(err['loc']))}: {msg}{got}")
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(lines)) from None


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file; errors name the file and, for syntax errors, the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}{where}: malformed YAML: {problem}") from None
    return raw


def load_config(path: str | os.PathLike[str], model: type[ModelT] = PipelineConfig) -> ModelT:  # type: ignore[assignment]
    """Read a YAML file and validate it as `model`.

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation; the message names the file,
            the line for syntax errors, and the dotted field path for validation errors.
    """
    return parse_config(read_yaml(path), model, str(path))
