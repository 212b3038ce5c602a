"""Who may call the endpoint, and from where: bearer keys compared in constant time and never logged, and the
Host and Origin a request may name.

Inference keys and admin keys are separate lists (an inference key never changes traffic); outside local
mode (``auth: api_key``) a router without inference keys refuses to start. The admin routes are off unless an
admin key is set, in every mode: locally, traffic changes go through `mlplatform traffic` and the Ray token.

An open endpoint (``auth: none``) answers only requests whose Host, and Origin when there is one, is a
loopback name: a web page in the user's browser can send requests to 127.0.0.1, and a DNS-rebinding page can
make them look same-origin; both name a host of their own. With API keys the key is the guard (a browser
never attaches it to a cross-site request by itself), and ``allowed_hosts`` narrows the hosts further.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import urlsplit

from mlplatform.errors import ConfigError, RequestError
from mlplatform.serve.protocol import clip
from mlplatform.settings import MLPLATFORM_ADMIN_KEYS, MLPLATFORM_API_KEYS

__all__ = ["ApiKeyAuth", "LOOPBACK_HOSTS"]

#: The names a request to a loopback address carries in its Host or Origin.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _hostname(value: str) -> str | None:
    """The host of a Host header (``name[:port]``, ``[v6]:port``) or of an Origin (``scheme://host[:port]``)."""
    try:
        return urlsplit(value if "//" in value else f"//{value}").hostname
    except ValueError:
        return None


class ApiKeyAuth:
    """Who may call the endpoint.

    Args:
        mode: ``api_key`` (requests need ``Authorization: Bearer <key>``) or ``none`` (an open local demo).
        keys: accepted inference keys (default: $MLPLATFORM_API_KEYS, read where the router runs).
        admin_keys: accepted admin keys (default: $MLPLATFORM_ADMIN_KEYS, in either mode); without any, admin
            routes refuse everyone (403).
        allowed_hosts: the host names a request's Host and Origin may carry (default: loopback names with
            ``none``, any host with ``api_key``).

    Raises:
        ConfigError: mode is api_key but there is no inference key.
    """

    def __init__(
        self,
        mode: Literal["none", "api_key"],
        keys: list[str] | None = None,
        admin_keys: list[str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        self.mode = mode
        keys = [] if mode == "none" else MLPLATFORM_API_KEYS.get() if keys is None else keys
        admin_keys = MLPLATFORM_ADMIN_KEYS.get() if admin_keys is None else admin_keys
        if mode == "api_key" and not keys:
            raise ConfigError(
                f"auth is 'api_key' but ${MLPLATFORM_API_KEYS.name} is empty on the router replica; set it (e.g. "
                "in the application's runtime_env env_vars) or use auth: none for a local demo"
            )
        self._keys = [k.encode() for k in keys]
        self._admin_keys = [k.encode() for k in admin_keys]
        if allowed_hosts is None and mode == "none":
            allowed_hosts = LOOPBACK_HOSTS
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self._hosts_text = ", ".join(sorted(self.allowed_hosts or ()))  # for refusals, made once

    def check_origin(self, headers: Mapping[str, str]) -> None:
        """403 when the request's Host, or its Origin, names a host this endpoint does not answer for."""
        if self.allowed_hosts is None:
            return
        hosts = self._hosts_text
        host = headers.get("host")
        # A client without a Host header (HTTP/1.0) is not a browser; every browser request carries one.
        if host is not None and _hostname(host) not in self.allowed_hosts:
            raise RequestError(403, f"Host {clip(host, 100)!r} is not allowed: this endpoint answers for {hosts}")
        origin = headers.get("origin")
        if origin is not None and _hostname(origin) not in self.allowed_hosts:
            raise RequestError(
                403, f"Origin {clip(origin, 100)!r} is not allowed: this endpoint answers requests from {hosts} only"
            )

    def check(self, headers: Mapping[str, str], *, admin: bool = False) -> str:
        """401 without a bearer token, 403 with a wrong one; a no-op when auth is none.

        Returns:
            Who the caller is, for the deployment history: a short fingerprint of the key, never the key.
        """
        if admin and not self._admin_keys:
            raise RequestError(
                403,
                f"admin routes are off: no admin key is set (${MLPLATFORM_ADMIN_KEYS.name} on the router); "
                "change traffic with `mlplatform traffic`, which uses the Ray token",
            )
        if self.mode == "none" and not admin:
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
