"""One root exception and a few subclasses; every message says what is wrong and what to do next.

Everything mlplatform raises on purpose is a `PlatformError`: the CLI prints its message and exits non-zero
(2 for a `ConfigError`, 1 otherwise) without a traceback; ``mlplatform --debug`` shows the traceback.
Anything else that reaches the CLI is a bug in mlplatform or in a library under it, and is shown as one.
"""

from __future__ import annotations

__all__ = [
    "PlatformError",
    "ConfigError",
    "DataContractError",
    "PlatformNotRunningError",
    "JobFailedError",
    "RegistryError",
    "RequestError",
    "RolloutFailedError",
    "ConflictError",
]


class PlatformError(Exception):
    """Root of every error mlplatform raises on purpose."""


class ConfigError(PlatformError):
    """A config, a traffic policy or a command-line value is missing, malformed, or fails validation.

    The message names the file (when there is one) and the dotted field path of each problem.
    """


class DataContractError(PlatformError):
    """Ingest or training could not honour the data contract (e.g. too many bad records, no rows)."""


class PlatformNotRunningError(PlatformError):
    """The platform (Ray head, MLflow server, Serve) does not answer where we expected it."""


class JobFailedError(PlatformError):
    """A submitted job ended in FAILED or STOPPED."""


class RegistryError(PlatformError):
    """A model, version or alias is missing from the MLflow registry, or its artifact is not a model we serve."""


class RequestError(PlatformError):
    """A request the endpoint refuses: `status` is the HTTP status to answer with, `message` says why.

    Raised by the request parsers and the router; the HTTP layer turns it into a JSON error response, so
    nothing a client sends surfaces as a 500.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RolloutFailedError(PlatformError):
    """A progressive rollout breached its budget and was rolled back (the job fails so that its status says so)."""


class ConflictError(PlatformError):
    """What an application serves changed since this change read it (another writer, or a live rollout).

    Changes that only touch part of the policy are re-planned on the new state automatically; this is raised
    when that keeps happening, or when the caller asked to change only the state it had read.
    """
