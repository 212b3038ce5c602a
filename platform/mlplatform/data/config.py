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

__all__ = ["FieldSpec", "FeatureSpec", "SourceSpec", "DataConfig"]


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
        description="Aggregations per key. Empty means one row per key: the fields are features as they are.",
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
