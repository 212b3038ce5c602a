"""The dataset spec: sources, their contracts and the features they feed (the `data:` section of a config).

A source's `format` names a source kind (`mlplatform.data.sources`); the kind checks what only it knows
(e.g. which fields a text file yields), so a new kind needs no edit here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.config import Identifier, StrictModel
from mlplatform.data import sources

__all__ = ["FieldSpec", "FeatureSpec", "SourceSpec", "DataConfig", "feature_names"]


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


class SourceSpec(StrictModel):
    """One raw input: where it is, how to read it, its contract and the features it feeds."""

    name: Identifier = Field(description="Source name, used in reports and quarantine output.")
    format: str = Field(
        description="File format: the name of a source kind in `mlplatform.data.sources` (csv, jsonl, parquet, text "
        "and image ship with mlplatform; `mlplatform.data.sources.names()` lists what is installed)."
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
        description="Aggregations per key. Empty means one row per key: every field but the key (and the label) is "
        "a feature as it is, a str field a categorical one (its categories are `allowed`, or the values the data "
        "holds); a key that appears twice sends both records to quarantine.",
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail the job when more than this share of records is quarantined."
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in sources.names():
            raise ValueError(f"unknown format {value!r}; the source kinds are {sources.names()}")
        return value

    @model_validator(mode="after")
    def _check_feature_columns(self) -> SourceSpec:
        sources.get(self.format).check_spec(self)
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
    """Sources joined on one key into a versioned training table (the `data:` section of a pipeline config)."""

    name: Identifier = Field(description="Dataset name; versions live under output_dir/name/.")
    key: str = Field(description="Entity id present in every source: an int or a str field (the same type in each).")
    label: str = Field(
        description="Label field, present in exactly one source with no features. Binary: 0/1 (or a bool), or any "
        "values with `positive` naming the one that means 1; multiclass: its values are the classes; regression: "
        "a number."
    )
    positive: str | int | float | bool | None = Field(
        None,
        description="The label value of the positive class (e.g. `malignant`); every other value is 0. Needed "
        "when the label is not 0/1 (a str label, say).",
    )
    task: Literal["binary", "multiclass", "regression"] | None = Field(
        None,
        description="What the label is: two classes, several classes, or a number. Default: inferred where the "
        "label says it unambiguously (`positive` or bool → binary, float → regression, `allowed` of three or more "
        "values → multiclass, int → binary 0/1).",
    )
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
        key_type = base.fields[self.key].type
        if key_type not in ("int", "str"):
            raise ValueError(f"key {self.key!r} is a {key_type} field of source {base.name!r}; a key is int or str")
        for source in self.sources:
            if source.fields[self.key].type != key_type:
                raise ValueError(
                    f"key {self.key!r} is {source.fields[self.key].type} in source {source.name!r} but {key_type} in "
                    f"{base.name!r}: give it one type everywhere"
                )
        self._check_label(base)
        self._check_features()
        return self

    def _check_label(self, base: SourceSpec) -> None:
        spec = base.fields[self.label]
        where = f"label {self.label!r} (a {spec.type} field of source {base.name!r})"
        if not spec.required:
            raise ValueError(f"{where} has required: false; a record without a label cannot train")
        if spec.type == "timestamp":
            raise ValueError(f"{where}: a timestamp cannot be a label")
        task = self.task_kind()
        if task == "regression":
            if spec.type not in ("int", "float"):
                raise ValueError(f"{where}: task regression needs a numeric label")
            if self.positive is not None:
                raise ValueError("`positive` names a class; task regression predicts a number")
            return
        if task == "multiclass":
            if self.positive is not None:
                raise ValueError("`positive` makes the label binary; task multiclass keeps every class")
            if spec.type in ("float", "bool"):
                raise ValueError(f"{where}: classes are int or str values (a bool label is task binary)")
            return
        if self.positive is None:
            if spec.type == "str":
                raise ValueError(
                    f"{where}: say which value is the positive class with `positive:`, or set `task: multiclass`"
                )
            if spec.allowed is not None and not set(spec.allowed) <= {0, 1}:
                raise ValueError(
                    f"{where} allows {spec.allowed}: a binary label is 0 or 1; set `positive:` to the value meaning 1 "
                    "(or `task: multiclass`)"
                )
            return
        if spec.type == "str" and not isinstance(self.positive, str):
            raise ValueError(f"positive {self.positive!r}: {where} holds text; quote the value")
        if spec.type in ("int", "float") and (isinstance(self.positive, (str, bool))):
            raise ValueError(f"positive {self.positive!r}: {where} holds numbers")
        if spec.type == "bool" and not isinstance(self.positive, bool):
            raise ValueError(f"positive {self.positive!r}: {where} holds true/false")
        if spec.allowed is not None and self.positive not in spec.allowed:
            raise ValueError(f"positive {self.positive!r} is not one of the label's allowed values {spec.allowed}")

    def task_kind(self) -> str:
        """binary, multiclass or regression: `task` as written, else what the label says unambiguously.

        `positive` or a bool label → binary; a float label → regression; a label whose `allowed` holds more
        than two values → multiclass; an int label otherwise → binary (0/1, held to it by the contract).
        """
        if self.task is not None:
            return self.task
        spec = self.base_source.fields[self.label]
        if self.positive is not None or spec.type == "bool":
            return "binary"
        if spec.type == "float":
            return "regression"
        if spec.allowed is not None and len(spec.allowed) > 2:
            return "multiclass"
        return "binary"

    def _check_features(self) -> None:
        seen: dict[str, str] = {}
        for source in self.sources:
            for name in feature_names(self, source):
                if name in seen:
                    raise ValueError(
                        f"feature {name!r} comes from both source {seen[name]!r} and source {source.name!r}: "
                        "rename one (a field, or the feature's `name`)"
                    )
                if name in (self.key, self.label):
                    raise ValueError(f"feature {name!r} of source {source.name!r} has the name of the key or label")
                seen[name] = source.name
        if not seen:
            raise ValueError(
                f"no features: the sources hold only the key {self.key!r} and the label {self.label!r}; add fields "
                "or aggregated `features:`"
            )

    @property
    def base_source(self) -> SourceSpec:
        """The source holding the label: one row per key, the left side of every join."""
        return next(s for s in self.sources if self.label in s.fields)

    def feature_columns(self) -> list[str]:
        """Feature columns of the training table, in the order the model sees them (label source first)."""
        base = self.base_source
        return [n for s in [base, *(s for s in self.sources if s is not base)] for n in feature_names(self, s)]


def feature_names(cfg: DataConfig, source: SourceSpec) -> list[str]:
    """The features `source` gives the table: its aggregations, or its fields as they are (one row per key)."""
    if source.features:
        return [f.name for f in source.features]
    return [name for name in source.fields if name not in (cfg.key, cfg.label)]
