"""Serving: one Ray Serve deployment per model version behind a weighted router (V1 + Open Inference V2).

The configs (`AppArgs`, `VersionSpec`) import without Ray; `build_app` and `make_app` import Ray Serve on first
access, because validating a Serve config (the CLI does it before every deploy) must not pay Ray Serve's
≈ 1.2 s import (measured).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlplatform.serve.config import AppArgs, VersionSpec

if TYPE_CHECKING:
    from mlplatform.serve.app import build_app, make_app

__all__ = ["build_app", "make_app", "AppArgs", "VersionSpec"]


def __getattr__(name: str) -> Any:
    if name in ("build_app", "make_app"):
        from mlplatform.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
