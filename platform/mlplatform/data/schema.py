"""The input schema of a model: the features a dataset version gives it, as a client sends them.

Ingest encodes a categorical column (a contract field of type ``str`` with ``allowed`` values) as the index of
its value in ``allowed``; the dataset version's profile records those values in code order. The input schema
carries that mapping from the dataset version to the registered model version (an ``input_schema.json`` file
among the model's artifacts) and from there to the endpoint, which encodes a raw value with the very list ingest
used. So an endpoint takes ``"plan": "pro"`` and can never encode it differently from training, and an old
model version keeps its own mapping.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from mlplatform.config import StrictModel

__all__ = ["FeatureSchema", "InputSchema", "SCHEMA_FILE", "input_schema"]

#: The file name of an input schema, in a model version's artifacts (``extra_files/``).
SCHEMA_FILE = "input_schema.json"


class FeatureSchema(StrictModel):
    """One model input as the client sends it."""

    name: str
    kind: Literal["numeric", "categorical"]
    nullable: bool = Field(description="The training data had missing values here (the model learned where they go).")
    categories: list[str] | None = Field(
        None, description="Categorical: the raw values, in code order (categories[i] reaches the model as i)."
    )
    example: float | str | None = Field(
        None, description="A typical value (the median; the most frequent category): for docs and sample requests."
    )


class InputSchema(StrictModel):
    """A model version's inputs, in model order, and what it answers (its task; a multiclass label's classes)."""

    features: list[FeatureSchema]
    task: Literal["binary", "multiclass", "regression"] = "binary"
    classes: list[str] = Field(default_factory=list, description="multiclass: the label's raw values, in output order")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The features as JSON-ready dicts (what V2 metadata and the OpenAPI document describe)."""
        return [f.model_dump(mode="json") for f in self.features]

    def categories(self) -> dict[str, list[str]]:
        """Categorical feature → its raw values in code order."""
        return {f.name: list(f.categories or []) for f in self.features if f.kind == "categorical"}


def input_schema(
    profile: dict[str, Any], features: list[str], task: str = "binary", classes: list[str] | tuple[str, ...] = ()
) -> InputSchema:
    """The input schema of a model trained on `features` of a dataset version, from that version's profile.

    Args:
        profile: the version's ``profile.json`` (`mlplatform.data.profile.profile`): per feature its kind, null
            count and, for a categorical, the share of each category in code order.
        features: the model's features, in model order.

    Raises:
        KeyError: a feature is not in the profile.
    """
    out = []
    for name in features:
        stats = profile["features"][name]
        categorical = stats.get("kind") == "categorical"
        shares = stats.get("categories") or {}
        median = (stats.get("quantiles") or {}).get("0.5")
        if categorical:
            example: float | str | None = max(shares, key=shares.get) if shares else None
        else:
            example = float(f"{median:.4g}") if isinstance(median, (int, float)) and math.isfinite(median) else None
        out.append(
            FeatureSchema(
                name=name,
                kind="categorical" if categorical else "numeric",
                nullable=bool(stats.get("nulls", 0)),
                categories=list(shares) if categorical else None,
                example=example,
            )
        )
    return InputSchema(features=out, task=task, classes=list(classes))
