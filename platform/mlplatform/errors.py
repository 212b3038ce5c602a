"""One root exception and a few subclasses; messages say what to do next."""

from __future__ import annotations

__all__ = [
    "PlatformError",
    "ConfigError",
    "DataContractError",
    "PlatformNotRunningError",
    "JobFailedError",
    "RegistryError",
]


class PlatformError(Exception):
    """Root of every error mlplatform raises on purpose."""


class ConfigError(PlatformError):
    """A config file is missing, malformed, or fails validation.

    The message names the file and the dotted field path of each problem.
    """


class DataContractError(PlatformError):
    """Ingest could not honour the data contract (e.g. too many bad records)."""


class PlatformNotRunningError(PlatformError):
    """The local platform (Ray head, MLflow server) is not up where we expected it."""


class JobFailedError(PlatformError):
    """A submitted job ended in FAILED or STOPPED."""


class RegistryError(PlatformError):
    """A model, version or alias is missing from the MLflow registry."""
