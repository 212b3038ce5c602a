"""Release configs: which Serve config a pipeline deploys, and how a progressive rollout moves and judges traffic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlplatform.config import StrictModel

__all__ = ["DeployConfig", "RolloutConfig", "OnlineTestConfig"]


class DeployConfig(StrictModel):
    """Which Serve config to apply after training."""

    serve_config: str = Field(description="Path of a Ray Serve config file (serve_configs/*.yaml).")
    application: str | None = Field(None, description="Application in that file (default: the only one).")


class OnlineTestConfig(StrictModel):
    """The online champion/challenger test of a rollout: labelled live quality, canary vs stable, judged by an
    always-valid sequential test (mSPRT; see `mlplatform.monitor.online`) after every step."""

    metric: Literal["logloss", "brier", "squared_error", "absolute_error"] | None = Field(
        None,
        description="Per-request loss compared (default: logloss for a classifier, squared_error for a regression; "
        "a regression's error is divided by the labels' variance so that tau and margin read alike for every task).",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Error rate of the test, valid however often it looks.")
    tau: float = Field(
        0.1, gt=0, description="Scale of the loss differences the test is tuned to find (the mixing prior's sd)."
    )
    margin: float = Field(0.0, ge=0, description="Loss increase tolerated before the canary counts as worse.")
    require: Literal["not_worse", "better"] = Field(
        "not_worse",
        description="What the step to 100 % needs: the canary not significantly worse, or significantly better.",
    )
    min_labels: int = Field(30, ge=2, description="Labelled requests of each version before the test decides.")


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
    online_test: OnlineTestConfig | None = Field(
        None,
        description="Judge live labelled quality too (needs the inference log and feedback): a canary "
        "significantly worse rolls back at any step, and the step to 100 % needs `require`.",
    )

    @model_validator(mode="after")
    def _check_steps(self) -> RolloutConfig:
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps must be percents in (0, 100], got {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {self.steps}")
        if self.steps[-1] != 100:
            raise ValueError(f"the last step must be 100, got {self.steps[-1]:g}")
        if self.online_test is not None and len(self.steps) < 2:
            raise ValueError("an online test compares the canary with the stable version: give a step before 100")
        return self
