"""Live traffic changes of a serving application: the one path every change to what an app serves takes.

`TrafficControl` reads an application's deployed config through Serve's REST API, edits the router's
``user_config`` (its `TrafficPolicy`: weights, shadow, faults), validates it against the deployed versions,
and puts the whole config back — exactly what ``serve deploy`` of an edited file does, so the two never
disagree. Serve applies a user_config change by calling the router's ``reconfigure()``: no replica
restarts, no dropped requests. Naming a version that is not deployed adds its deployment (a rolling update
that keeps serving). Each change is appended to the deployment history.

Its dependencies are injected (Serve's REST API, the model registry, the history), so the logic is
unit-tested with fakes; the defaults are the real ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from mlplatform import registry as registry_module
from mlplatform.errors import ConfigError, PlatformError
from mlplatform.registry import CHAMPION, PREVIOUS
from mlplatform.release import history as history_module
from mlplatform.release.history import Event
from mlplatform.release.serve_api import ServeAdmin
from mlplatform.serve.config import AppArgs, router_name
from mlplatform.serve.policy import TrafficPolicy, normalize_version, parse_policy

__all__ = ["ServedApp", "TrafficControl", "Registry", "History"]


class Registry(Protocol):
    """What a traffic change needs of the model registry (`mlplatform.registry` is one)."""

    def resolve_version(
        self, name: str, version: str | None = None, alias: str | None = None, *, tracking_uri: str | None = None
    ) -> str: ...

    def aliases_of(self, model: str, *, tracking_uri: str | None = None) -> dict[str, str]: ...

    def set_aliases(self, name: str, aliases: dict[str, str], *, tracking_uri: str | None = None) -> None: ...


class History(Protocol):
    """Where changes are recorded (`mlplatform.release.history` is one)."""

    def record(self, event: Event, *, tracking_uri: str | None = None) -> Event: ...

    def read(self, app: str, *, tracking_uri: str | None = None) -> list[Event]: ...


@dataclass(frozen=True)
class ServedApp:
    """An application as deployed: its config, its typed args and the traffic policy it runs."""

    name: str
    config: dict[str, Any]
    args: AppArgs
    policy: TrafficPolicy

    @property
    def versions(self) -> list[str]:
        return [v.version for v in self.args.versions if v.version is not None]

    @property
    def router(self) -> str:
        return self.args.router


def _natural(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class TrafficControl:
    """Reads and changes what serving applications serve.

    Args:
        admin: Serve's REST API (default: the local platform's, or $RAY_ADDRESS).
        registry: the model registry (default: MLflow's, through `mlplatform.registry`).
        history: the deployment history (default: MLflow's, through `mlplatform.release.history`).
    """

    def __init__(
        self,
        admin: ServeAdmin | None = None,
        *,
        registry: Registry = registry_module,  # type: ignore[assignment]
        history: History = history_module,  # type: ignore[assignment]
    ) -> None:
        self.admin = admin or ServeAdmin()
        self.registry = registry
        self.history = history

    # ------------------------------------------------------------------------------------- reading

    def served(self, name: str) -> ServedApp:
        """Read an application's deployed config and the traffic policy in it.

        Raises:
            PlatformError: no such application, or it was deployed with serve.run (no config to edit).
        """
        app = self.admin.app(name)
        config = app.get("deployed_app_config")
        if not config:
            raise PlatformError(
                f"Serve application {name!r} was deployed with serve.run, so it has no config to edit; "
                "deploy it from a Serve config file (mlplatform deploy step or `serve deploy`)"
            )
        args = AppArgs.model_validate(config.get("args") or {})
        if any(v.version is None for v in args.versions):
            # Deployed by `serve deploy` of a file naming aliases: pin them as the builder did, so the next
            # change writes concrete versions (a rolling update of the router, once).
            pinned = [
                v.model_copy(
                    update={
                        "version": self.registry.resolve_version(
                            args.model_name, alias=v.alias, tracking_uri=args.tracking_uri
                        ),
                        "alias": None,
                    }
                )
                if v.version is None
                else v
                for v in args.versions
            ]
            args = args.model_copy(update={"versions": pinned})
            config = {**config, "args": args.model_dump(mode="json", exclude_none=True)}
        override = next((d for d in config.get("deployments") or [] if d.get("name") == args.router), {})
        raw = override.get("user_config") or args.default_policy()
        versions = [v.version for v in args.versions if v.version is not None]
        try:
            policy = parse_policy(raw, versions)
        except ConfigError as exc:
            raise PlatformError(f"application {name!r} has an invalid traffic policy deployed: {exc}") from None
        return ServedApp(name, config, args, policy)

    def resolve(self, model: str, ref: str, *, tracking_uri: str | None = None) -> str:
        """The concrete version behind a version ('3', 'v3') or an alias ('champion')."""
        ref = str(normalize_version(ref))
        if ref.isdigit():
            return self.registry.resolve_version(model, ref, tracking_uri=tracking_uri)
        return self.registry.resolve_version(model, alias=ref, tracking_uri=tracking_uri)

    # ------------------------------------------------------------------------------------- changing

    def apply_policy(
        self,
        name: str,
        policy: dict[str, Any],
        *,
        action: str,
        reason: str = "",
        move_aliases: dict[str, str] | None = None,
        by: str = "",
        wait_timeout: float = 600,
    ) -> Event:
        """Validate and apply a traffic policy to application `name`; record it in the deployment history.

        Versions the policy names that are not deployed yet are added (loaded from the registry); the rest
        of the change is a live reconfigure. `move_aliases` (alias → version) are set once traffic has moved,
        so that if Serve refuses the change the aliases still say what serves.

        Raises:
            ConfigError: the policy is invalid for the application (nothing is changed).
            RegistryError: the policy names a version the registry does not have (nothing is changed).
            PlatformError: Serve refused or failed the update.
        """
        app = self.served(name)
        tracking_uri = app.args.tracking_uri
        named = set(policy.get("weights", {})) | set(policy.get("faults", {}) or {})
        if policy.get("shadow"):
            named.add(policy["shadow"]["version"])
        add = sorted({str(normalize_version(v)) for v in named} - set(app.versions), key=_natural)
        for v in add:
            self.registry.resolve_version(app.args.model_name, v, tracking_uri=tracking_uri)
        try:
            checked = parse_policy(policy, app.versions + add)
        except ConfigError as exc:
            raise ConfigError(f"traffic change for {name!r} refused: {exc}") from None
        if add:
            # New versions come up with no traffic first: one that fails to load must not get any, and the
            # config goes back to what served before so that Serve stops retrying it.
            before = self.admin.apply(_with_policy(app, app.policy, add))
            try:
                self.admin.wait(name, before, timeout=wait_timeout)
            except PlatformError as exc:
                self.admin.wait(name, self.admin.apply(app.config), timeout=wait_timeout)
                raise PlatformError(
                    f"version(s) {', '.join('v' + v for v in add)} of {app.args.model_name!r} failed to deploy, so "
                    f"{name!r} keeps its previous traffic: {exc}"
                ) from None
            app = self.served(name)
        before = self.admin.apply(_with_policy(app, checked, []))
        self.admin.wait(name, before, timeout=wait_timeout)
        if move_aliases:
            self.registry.set_aliases(app.args.model_name, move_aliases, tracking_uri=tracking_uri)
        return self.history.record(
            Event(
                app=name,
                model=app.args.model_name,
                action=action,
                weights=dict(checked.weights),
                shadow=checked.shadow.model_dump() if checked.shadow else None,
                faults={v: f.model_dump() for v, f in checked.faults.items()},
                aliases=self.registry.aliases_of(app.args.model_name, tracking_uri=tracking_uri),
                reason=reason,
                by=by,
            ),
            tracking_uri=tracking_uri,
        )

    def set_traffic(
        self,
        name: str,
        weights: dict[str, float] | None = None,
        *,
        shadow: dict[str, Any] | None | bool = False,
        faults: dict[str, Any] | None = None,
        reason: str = "",
    ) -> Event:
        """Change some of the policy and keep the rest: weights, shadow (None clears, False keeps), faults
        (version → spec; a spec of None or with abort_percent 0 clears that version's fault)."""
        current = self.served(name).policy
        policy: dict[str, Any] = {"weights": weights if weights is not None else current.weights}
        if shadow is False:
            if current.shadow is not None:
                policy["shadow"] = current.shadow.model_dump()
        elif shadow is not None:
            policy["shadow"] = shadow
        merged = {v: f.model_dump() for v, f in current.faults.items()}
        if faults is not None:
            merged = {**merged, **{str(normalize_version(v)): f for v, f in faults.items()}}
        merged = {v: f for v, f in merged.items() if f and f.get("abort_percent", 0) > 0}
        if merged:
            policy["faults"] = merged
        return self.apply_policy(name, policy, action="traffic", reason=reason)

    def promote(self, name: str, version: str, *, reason: str = "") -> Event:
        """Send all traffic to `version` and make it the champion; the old champion becomes `previous`."""
        version = str(normalize_version(version))
        app = self.served(name)
        policy: dict[str, Any] = {"weights": {version: 100.0}}
        if app.policy.shadow is not None and app.policy.shadow.version != version:
            policy["shadow"] = app.policy.shadow.model_dump()
        old = self.registry.aliases_of(app.args.model_name, tracking_uri=app.args.tracking_uri).get(CHAMPION)
        moves = {CHAMPION: version, **({PREVIOUS: old} if old and old != version else {})}
        return self.apply_policy(
            name, policy, action="promote", reason=reason or f"promote v{version}", move_aliases=moves
        )

    def rollback(self, name: str, *, reason: str = "") -> Event:
        """Restore the state before the latest change (traffic policy and aliases) from the history.

        Rolling back twice returns to where the first rollback started, as `kubectl rollout undo` does.

        Raises:
            PlatformError: the history holds no earlier, different state.
        """
        app = self.served(name)
        events = self.history.read(name, tracking_uri=app.args.tracking_uri)
        if not events:
            raise PlatformError(f"application {name!r} has no deployment history to roll back with")
        current = events[-1]
        target = next((e for e in reversed(events[:-1]) if e.state() != current.state()), None)
        if target is None:
            raise PlatformError(
                f"application {name!r} has no earlier state to roll back to ({len(events)} change(s), all the same)"
            )
        why = reason or f"rollback to the state of {target.at} ({target.action} by {target.by})"
        moves = target.aliases if target.aliases and target.aliases != current.aliases else None
        return self.apply_policy(name, target.policy(), action="rollback", reason=why, move_aliases=moves)


def _with_policy(app: ServedApp, policy: TrafficPolicy, add: list[str]) -> dict[str, Any]:
    """The app's config with `policy` as the router's user_config and versions `add` deployed."""
    config = copy.deepcopy(app.config)
    if add:
        template = app.args.versions[0]
        args = dict(config["args"])
        args["versions"] = [
            *args["versions"],
            *(
                template.model_copy(update={"version": v, "alias": None, "weight": 0.0, "shadow": False}).model_dump(
                    mode="json", exclude_none=True
                )
                for v in add
            ),
        ]
        config["args"] = args
    user_config = policy.model_dump(mode="json", exclude_none=True)
    router = router_name(app.args.model_name)
    deployments = [d for d in config.get("deployments") or [] if d.get("name") != router]
    deployments.append(
        {
            **next((d for d in config.get("deployments") or [] if d.get("name") == router), {}),
            "name": router,
            "user_config": user_config,
        }
    )
    config["deployments"] = deployments
    return config
