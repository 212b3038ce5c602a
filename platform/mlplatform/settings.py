"""Settings read from the environment: each declared once here, with its type, default and a one-line doc.

As in MLflow's ``environment_variables.py``: a setting is an object whose ``get()`` reads and converts the
variable at call time (nothing is read at import), and a value that does not convert is a `ConfigError`
naming the variable. The README's settings table lists these (`describe()` prints it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from mlplatform.errors import ConfigError

__all__ = [
    "Setting",
    "ALL",
    "MLPLATFORM_HOME",
    "MLFLOW_TRACKING_URI",
    "RAY_ADDRESS",
    "MLPLATFORM_API_KEYS",
    "MLPLATFORM_ADMIN_KEYS",
    "MLPLATFORM_GIT_COMMIT",
    "MLPLATFORM_SUBMITTED_BY",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "platform_home",
    "describe",
]

T = TypeVar("T")


def _keys(raw: str) -> list[str]:
    """A comma-separated list of keys; blanks dropped."""
    return [k.strip() for k in raw.split(",") if k.strip()]


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, how its text becomes a value, its default and what it is for."""

    name: str
    parse: Callable[[str], T]
    default: T
    doc: str

    def get(self) -> T:
        """The current value: parsed from the environment when set and not blank, else the default."""
        raw = os.environ.get(self.name, "")
        if not raw.strip():
            return self.default
        try:
            return self.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"environment variable {self.name}={raw!r} is invalid: {exc}") from None

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name, "").strip())


MLPLATFORM_HOME: Setting[Path | None] = Setting(
    "MLPLATFORM_HOME",
    _path,
    None,
    "State folder of the local platform (logs, MLflow store, data); default ./.mlplatform.",
)
MLFLOW_TRACKING_URI: Setting[str | None] = Setting(
    "MLFLOW_TRACKING_URI", str, None, "MLflow tracking server; `mlplatform up` exports it to every Ray process."
)
RAY_ADDRESS: Setting[str | None] = Setting(
    "RAY_ADDRESS", str, None, "Ray cluster; an http:// value is the Jobs API/dashboard that `submit` and `traffic` use."
)
MLPLATFORM_API_KEYS: Setting[list[str]] = Setting(
    "MLPLATFORM_API_KEYS",
    _keys,
    [],
    "Inference API keys (comma-separated): the endpoint accepts any of them; CLI commands send the first.",
)
MLPLATFORM_ADMIN_KEYS: Setting[list[str]] = Setting(
    "MLPLATFORM_ADMIN_KEYS", _keys, [], "Admin API keys (comma-separated) for the endpoint's traffic routes."
)
MLPLATFORM_GIT_COMMIT: Setting[str | None] = Setting(
    "MLPLATFORM_GIT_COMMIT", str, None, "Commit of the submitted code (set by `mlplatform submit`; jobs have no .git)."
)
MLPLATFORM_SUBMITTED_BY: Setting[str | None] = Setting(
    "MLPLATFORM_SUBMITTED_BY", str, None, "Who submitted the job (set by `mlplatform submit`); lineage tags record it."
)
RAY_AUTH_TOKEN: Setting[str | None] = Setting(
    "RAY_AUTH_TOKEN", str, None, "Ray's token for the dashboard and Jobs API (Ray's own variable)."
)
RAY_AUTH_TOKEN_PATH: Setting[Path] = Setting(
    "RAY_AUTH_TOKEN_PATH",
    _path,
    Path("~/.ray/auth_token").expanduser(),
    "File holding Ray's token when RAY_AUTH_TOKEN is not set (Ray's own variable).",
)

#: Every setting, in the order the README documents them.
ALL: tuple[Setting, ...] = (
    MLPLATFORM_HOME,
    MLFLOW_TRACKING_URI,
    RAY_ADDRESS,
    MLPLATFORM_API_KEYS,
    MLPLATFORM_ADMIN_KEYS,
    MLPLATFORM_GIT_COMMIT,
    MLPLATFORM_SUBMITTED_BY,
    RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH,
)


def platform_home() -> Path:
    """The absolute state folder: $MLPLATFORM_HOME, else ./.mlplatform under the current directory."""
    return MLPLATFORM_HOME.get() or (Path.cwd() / ".mlplatform").resolve()


def describe() -> str:
    """The settings as a Markdown table (the README's)."""
    rows = ["| variable | default | what it is for |", "|---|---|---|"]
    for s in ALL:
        shown = str(s.default).replace(str(Path.home()), "~")
        default = "—" if s.default in (None, []) else f"`{shown}`"
        rows.append(f"| `{s.name}` | {default} | {s.doc} |")
    return "\n".join(rows)
