"""API-key authentication of the endpoint: bearer keys compared in constant time, never logged.

Inference keys and admin keys are separate lists (an inference key never changes traffic); outside local
mode (``auth: api_key``) a router without inference keys refuses to start.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from mlplatform.errors import ConfigError, RequestError
from mlplatform.settings import MLPLATFORM_ADMIN_KEYS, MLPLATFORM_API_KEYS

__all__ = ["ApiKeyAuth"]


class ApiKeyAuth:
    """Who may call the endpoint.

    Args:
        mode: ``api_key`` (requests need ``Authorization: Bearer <key>``) or ``none`` (an open local demo).
        keys: accepted inference keys (default: $MLPLATFORM_API_KEYS, read where the router runs).
        admin_keys: accepted admin keys (default: $MLPLATFORM_ADMIN_KEYS); without any, admin routes refuse
            everyone (403).

    Raises:
        ConfigError: mode is api_key but there is no inference key.
    """

    def __init__(
        self,
        mode: Literal["none", "api_key"],
        keys: list[str] | None = None,
        admin_keys: list[str] | None = None,
    ) -> None:
        self.mode = mode
        if mode == "none":
            keys, admin_keys = [], []
        keys = MLPLATFORM_API_KEYS.get() if keys is None else keys
        admin_keys = MLPLATFORM_ADMIN_KEYS.get() if admin_keys is None else admin_keys
        if mode == "api_key" and not keys:
            raise ConfigError(
                f"auth is 'api_key' but ${MLPLATFORM_API_KEYS.name} is empty on the router replica; set it (e.g. "
                "in the application's runtime_env env_vars) or use auth: none for a local demo"
            )
        self._keys = [k.encode() for k in keys]
        self._admin_keys = [k.encode() for k in admin_keys]

    def check(self, headers: Mapping[str, str], *, admin: bool = False) -> str:
        """401 without a bearer token, 403 with a wrong one; a no-op when auth is none.

        Returns:
            Who the caller is, for the deployment history: a short fingerprint of the key, never the key.
        """
        if self.mode == "none":
            return "anonymous (auth: none)"
        header = headers.get("authorization")
        if not header:
            raise RequestError(401, "missing Authorization header; send 'Authorization: Bearer <key>'")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "Authorization header must be 'Bearer <key>'")
        presented = token.strip().encode()
        keys = self._admin_keys if admin else self._keys
        # Compare against every key in constant time; never log the key.
        if not any(hmac.compare_digest(presented, key) for key in keys):
            raise RequestError(403, "admin API key not accepted" if admin else "API key not accepted")
        return "key:" + hashlib.sha256(presented).hexdigest()[:8]
