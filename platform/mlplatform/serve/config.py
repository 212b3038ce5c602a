"""The config of a serving application: the `args` of its Serve config (versions, weights, replicas, auth).

Pure pydantic (Ray is imported only to check an autoscaling_config), so a Serve config file is validated
before anything is deployed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.config import StrictModel
from mlplatform.serve.policy import normalize_version
from mlplatform.settings import platform_home

__all__ = ["VersionSpec", "StickySpec", "InferenceLogConfig", "AppArgs", "router_name"]

_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class VersionSpec(StrictModel):
    """One model version behind the endpoint, its traffic share and its replicas."""

    version: str | None = Field(None, description="Registered version number (give this or `alias`).")
    alias: str | None = Field(None, description="Registry alias resolved to a version at deploy time.")
    weight: float = Field(ge=0, le=100, description="Percent of traffic; the weights of all versions sum to 100.")
    num_replicas: int = Field(1, ge=1, description="Replicas of this version.")
    num_cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs per replica. Fractional so that a 2-CPU machine fits the ingress, two versions and "
        "Ray Data tasks.",
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="Most requests merged into one predict call.")
    batch_wait_timeout_s: float = Field(
        0.002, ge=0, le=1, description="Longest wait for a batch to fill before predicting anyway."
    )
    autoscaling_config: dict[str, Any] | None = Field(
        None,
        description="Ray Serve autoscaling_config of this version's deployment (min_replicas, max_replicas, "
        "target_ongoing_requests, ...); replaces num_replicas.",
    )
    shadow: bool = Field(
        False, description="Mirror every request to this version; its answers are compared, never returned."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_str(cls, value: Any) -> Any:
        # YAML reads `version: 3` as an int, people write v3; registry versions are strings.
        return normalize_version(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionSpec:
        if (self.version is None) == (self.alias is None):
            raise ValueError(
                f"give exactly one of `version` or `alias`, got version={self.version!r} alias={self.alias!r}"
            )
        if self.shadow and self.weight != 0:
            raise ValueError(f"a shadow version answers no client: give it weight 0, not {self.weight:g}")
        if self.autoscaling_config is not None:
            from ray.serve.config import AutoscalingConfig

            try:
                AutoscalingConfig(**self.autoscaling_config)
            except Exception as exc:  # pydantic v1/v2 errors inside Ray; the message is what matters
                raise ValueError(f"invalid autoscaling_config: {exc}") from None
        return self

    @property
    def label(self) -> str:
        """How the spec names its version, for messages: ``version '3'`` or ``alias 'champion'``."""
        return f"version {self.version!r}" if self.version is not None else f"alias {self.alias!r}"


class StickySpec(StrictModel):
    """Where a request carries its routing key: requests with the same key go to the same version."""

    header: str | None = Field(None, description="HTTP header holding the key, e.g. x-user-id.")
    field: str | None = Field(
        None,
        description="Top-level body field holding the key (V1: next to `instances`; V2: in `parameters`).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> StickySpec:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of `header` or `field`")
        if self.field in ("instances", "inputs", "outputs", "id", "parameters"):
            raise ValueError(f"field {self.field!r} is part of the protocol; pick another name")
        return self


class InferenceLogConfig(StrictModel):
    """The inference log of an application (see `mlplatform.serve.inference_log`): what each router replica
    samples and how often it writes. Without this section nothing is logged (features can be personal data:
    logging them is a choice), and feedback is refused."""

    path: str | None = Field(
        None,
        description="Where the log lives: a folder or a pyarrow filesystem URI such as s3://bucket/log "
        "(default: ${MLPLATFORM_HOME}/inference_log). Every router replica must reach it.",
    )
    sample_rate: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of answered requests logged. 1 by default: feedback can only label logged requests.",
    )
    flush_s: float = Field(5.0, gt=0, le=3600, description="Longest time a logged row waits in memory.")
    flush_rows: int = Field(5000, ge=1, description="Rows that trigger a write before flush_s.")
    max_buffer_rows: int = Field(
        200_000, ge=1, description="Rows a replica holds while writes lag; beyond, rows are dropped (counted)."
    )

    def resolved_path(self) -> str:
        return self.path or str(platform_home() / "inference_log")


class AppArgs(StrictModel):
    """The `args` of a serving application (`mlplatform.release.app:build_app`, or `mlplatform.serve:build_app`)."""

    model_name: str = Field(pattern=_NAME_PATTERN, description="Registered model name in MLflow.")
    tracking_uri: str | None = Field(None, description="MLflow tracking server (default: $MLFLOW_TRACKING_URI).")
    versions: list[VersionSpec] = Field(min_length=1, description="Versions served and their traffic weights.")
    features: list[str] | None = Field(
        None,
        min_length=1,
        description="Input features in model order (default: the MLflow signature of the first version).",
    )
    max_instances: int = Field(1000, ge=1, description="Most instances in one request (more → 413).")
    max_body_bytes: int = Field(2_000_000, ge=1, description="Largest request body in bytes (more → 413).")
    max_queued_requests: int = Field(
        1000,
        ge=1,
        description="Requests a router replica lets wait beyond the 256 it handles at once; more are refused at "
        "once with 503 and Retry-After (instead of an unbounded queue whose waits only grow).",
    )
    retry_after_s: float = Field(1.0, gt=0, description="The Retry-After of a request refused by a full queue.")
    allow_missing: bool = Field(False, description="Accept null/NaN feature values (passed to XGBoost as missing).")
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs of each router replica.")
    ingress_num_replicas: int = Field(1, ge=1, description="Router replicas (each holds the traffic policy).")
    colocate: bool = Field(
        False,
        description="Load every version inside the router replicas instead of one deployment per version: no "
        "hop between router and model, which is fastest for small models; versions then share the router's "
        "replicas and resources (per-version replicas, batching and autoscaling do not apply).",
    )
    sticky: StickySpec | None = Field(
        None, description="Route requests carrying a key consistently (same key → same version while weights stay)."
    )
    auth: Literal["none", "api_key"] = Field(
        "api_key",
        description="`api_key`: requests need `Authorization: Bearer <key>` with a key from "
        "$MLPLATFORM_API_KEYS (comma-separated, read on the replica). `none`: open endpoint (local demos).",
    )
    allowed_hosts: list[str] | None = Field(
        None,
        min_length=1,
        description="Host names a request's Host header (and Origin, when sent) may carry; others get 403. "
        "Default: loopback names (127.0.0.1, localhost, ::1) with auth: none, which keeps web pages and DNS "
        "rebinding off an open endpoint; any host with api_key, where the key is the guard.",
    )
    inference_log: InferenceLogConfig | None = Field(
        None, description="Log sampled requests and accept feedback (see InferenceLogConfig); None: no log."
    )
    retire_after_s: float | None = Field(
        None,
        gt=0,
        description="Retire a version (remove its replicas) once it has carried no traffic — weight 0, not the "
        "shadow, no pinned request — for this many seconds; checked at each change of the application. "
        "None keeps every version deployed. Rolling back to a retired version deploys it again.",
    )

    @model_validator(mode="after")
    def _check_versions(self) -> AppArgs:
        weights = [v.weight for v in self.versions]
        if abs(sum(weights) - 100.0) > 1e-6:
            raise ValueError(f"version weights must sum to 100, got {weights} (sum {sum(weights):g})")
        shadows = [v.label for v in self.versions if v.shadow]
        if len(shadows) > 1:
            raise ValueError(f"at most one shadow version, got {shadows}")
        for attr in ("version", "alias"):
            given = [getattr(v, attr) for v in self.versions if getattr(v, attr) is not None]
            dupes = sorted({x for x in given if given.count(x) > 1})
            if dupes:
                raise ValueError(f"each version may appear once; {attr} {dupes} is listed more than once")
        if self.features is not None:
            dupes = sorted({f for f in self.features if self.features.count(f) > 1})
            if dupes:
                raise ValueError(f"features must be unique, {dupes} appear more than once")
        return self

    @property
    def router(self) -> str:
        """The ingress deployment's name: where a Serve config puts the live traffic policy (user_config)."""
        return router_name(self.model_name)

    def default_policy(self) -> dict[str, Any]:
        """The router user_config these versions describe: their weights, and the shadow version if any."""
        policy: dict[str, Any] = {"weights": {v.version or v.alias: v.weight for v in self.versions}}
        shadows = [v for v in self.versions if v.shadow]
        if shadows:
            policy["shadow"] = {"version": shadows[0].version or shadows[0].alias}
        return policy


def router_name(model_name: str) -> str:
    """The ingress deployment of a model's application is named after the model."""
    return f"{model_name}-router"
