"""Settings read from the environment, declared once, each with a one-line doc.

Nothing here is read at import time: call the accessor where the value is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Setting:
    name: str
    default: str | None
    doc: str

    def get(self) -> str | None:
        return os.environ.get(self.name, self.default)


#: State folder of the local platform: Ray/MLflow logs, the MLflow store, sample data, dataset versions.
MLPLATFORM_HOME = _Setting("MLPLATFORM_HOME", None, "state folder (default: ./.mlplatform)")
#: MLflow tracking server URI; `mlplatform up` exports it to every Ray process it starts.
MLFLOW_TRACKING_URI = _Setting("MLFLOW_TRACKING_URI", None, "MLflow tracking server, e.g. http://127.0.0.1:5000")
#: Ray Jobs API address used by `mlplatform submit` when --address is not given.
RAY_ADDRESS = _Setting("RAY_ADDRESS", None, "Ray Jobs API, e.g. http://127.0.0.1:8265")
#: Comma-separated inference API keys; read by the serving ingress, never logged.
MLPLATFORM_API_KEYS = _Setting("MLPLATFORM_API_KEYS", None, "inference API keys (comma-separated)")
#: Comma-separated admin API keys for the router's traffic endpoints; read by the ingress, never logged.
MLPLATFORM_ADMIN_KEYS = _Setting("MLPLATFORM_ADMIN_KEYS", None, "admin API keys for traffic changes (comma-separated)")
#: The commit the job's code came from; `mlplatform submit` sets it (the uploaded copy has no .git).
MLPLATFORM_GIT_COMMIT = _Setting("MLPLATFORM_GIT_COMMIT", None, "git commit of the submitted code")
#: Who submitted the job; `mlplatform submit` sets it, lineage tags record it.
MLPLATFORM_SUBMITTED_BY = _Setting("MLPLATFORM_SUBMITTED_BY", None, "user who submitted the job")


def platform_home() -> Path:
    """The absolute state folder: $MLPLATFORM_HOME, else ./.mlplatform under the current directory."""
    value = MLPLATFORM_HOME.get()
    return Path(value).expanduser().resolve() if value else (Path.cwd() / ".mlplatform").resolve()
