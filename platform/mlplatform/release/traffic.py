"""The release control plane: the one path every change to what an application serves takes.

Serve's REST API replaces a whole application config per PUT and has no version to compare, so two clients
that read-modify-write would lose one change. Here every change — a traffic split, a shadow, faults,
promote, rollback, a rollout step, a deploy — goes through `TrafficControl.change`:

1. read the application's log (`mlplatform.release.history`) and what Serve runs;
2. finish what a dead writer left half-done (an ``intent`` whose lease ran out is applied again — as a
   Kubernetes controller reconciles towards the declared state), wait for a live one, and undo a rollout
   whose process died;
3. plan the change on that state and validate it;
4. claim the next change number with the intent (compare-and-set: if another writer took it, re-read and
   re-plan — a partial change such as "set a shadow" keeps the other writer's weights — and give up with a
   `ConflictError` after a few tries);
5. apply it through Serve's declarative config (new versions come up at weight 0 first; versions the change
   no longer serves are retired), move the aliases, and mark it ``applied`` (or ``failed``, restoring what
   served).

Serve applies a user_config change by calling the router's ``reconfigure()``: no replica restarts, no dropped
requests. Dependencies (Serve's REST API, the registry, the history, the clock) are injected, so the whole
logic is unit-tested with fakes; the defaults are the real ones.
"""

from __future__ import annotations

import calendar
import copy
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from mlplatform import registry as registry_module
from mlplatform.errors import ConfigError, ConflictError, PlatformError
from mlplatform.registry import CHALLENGER, CHAMPION, PREVIOUS
from mlplatform.release import history as history_module
from mlplatform.release.history import Event, who
from mlplatform.release.serve_api import ServeAdmin
from mlplatform.serve.config import AppArgs, router_name
from mlplatform.serve.policy import TrafficPolicy, normalize_version, parse_policy

__all__ = [
    "ServedApp",
    "Plan",
    "RolloutState",
    "TrafficControl",
    "Registry",
    "History",
    "rollout_state",
    "ROLLOUT_LEASE_S",
]

#: A rollout whose process has not said it is alive for this long is taken for dead.
ROLLOUT_LEASE_S = 60.0
#: How long a change that only reconfigures the router may take before another writer finishes it.
POLICY_LEASE_S = 120.0
#: How often a change re-plans on a state another writer changed before giving up.
MAX_ATTEMPTS = 8
#: Events that end a rollout (a deploy ends the rollout it names: it replaces the whole application).
ROLLOUT_ENDS = ("rollout-done", "rollout-rollback", "rollout-abort", "deploy")


class Registry(Protocol):
    """What the control plane needs of the model registry (`mlplatform.registry` is one)."""

    def resolve_version(
        self, name: str, version: str | None = None, alias: str | None = None, *, tracking_uri: str | None = None
    ) -> str: ...

    def aliases_of(self, model: str, *, tracking_uri: str | None = None) -> dict[str, str]: ...

    def set_aliases(self, name: str, aliases: dict[str, str | None], *, tracking_uri: str | None = None) -> None: ...


class History(Protocol):
    """The application's change log (`mlplatform.release.history` is one)."""

    def read(self, app: str, *, tracking_uri: str | None = None) -> list[Event]: ...

    def claim(
        self, event: Event, seq: int, *, tracking_uri: str | None = None, lease_s: float = 900
    ) -> Event | None: ...

    def settle(self, event: Event, status: str, *, tracking_uri: str | None = None) -> bool: ...

    def heartbeat(self, app: str, rollout_id: str, *, tracking_uri: str | None = None) -> None: ...

    def heartbeats(self, app: str, *, tracking_uri: str | None = None) -> dict[str, float]: ...

    def serve_config_lock(self, *, tracking_uri: str | None = None) -> AbstractContextManager[int]: ...


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


@dataclass(frozen=True)
class Plan:
    """What a change wants, planned from the application as it serves now.

    Attributes:
        policy: the router user_config after the change (validated against the versions it serves then).
        move_aliases: aliases to point at versions (None deletes the alias).
        versions: the versions to serve after the change; default: those served now plus any the policy
            names (a version left out is retired: its replicas go).
        reason: why, when only the plan knows (e.g. which state a rollback returns to).
    """

    policy: dict[str, Any]
    move_aliases: dict[str, str | None] = field(default_factory=dict)
    versions: list[str] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RolloutState:
    """A rollout that started and has not ended, as the log tells it."""

    id: str
    canary: str
    stable: str
    config: dict[str, Any]
    start_policy: dict[str, Any]
    step: float | None
    started_at: str
    heartbeat: float | None

    def alive(self, now: float) -> bool:
        return self.heartbeat is not None and now - self.heartbeat < ROLLOUT_LEASE_S

    def describe(self, now: float) -> str:
        beat = f"last heartbeat {now - self.heartbeat:.0f}s ago" if self.heartbeat else "no heartbeat"
        step = f"at step {self.step:g}%" if self.step is not None else "before its first step"
        return f"rollout {self.id} of v{self.canary} against v{self.stable}, {step}, {beat}"


def rollout_state(log: list[Event], heartbeats: dict[str, float]) -> RolloutState | None:
    """The rollout in progress according to `log` (the latest one started and not ended), if any."""
    started = [e for e in log if e.action == "rollout-start" and e.applied and e.rollout]
    ended = {e.rollout["id"] for e in log if e.action in ROLLOUT_ENDS and e.applied and e.rollout}
    running = [e for e in started if e.rollout["id"] not in ended]  # type: ignore[index]
    if not running:
        return None
    start = running[-1]
    info = start.rollout or {}
    steps = [
        e.rollout["step"]
        for e in log
        if e.action == "rollout-step" and e.applied and e.rollout and e.rollout.get("id") == info["id"]
    ]
    return RolloutState(
        id=info["id"],
        canary=info["canary"],
        stable=info["stable"],
        config=info["config"],
        start_policy=info["start"],
        step=steps[-1] if steps else None,
        started_at=start.at,
        heartbeat=heartbeats.get(info["id"]),
    )


def _before(log: list[Event], event: Event) -> list[str]:
    """The versions deployed just before `event` (those of the applied change before it)."""
    earlier = [e for e in log if e.applied and e.seq < event.seq]
    return earlier[-1].versions if earlier else []


def epoch_of(at: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None


def _natural(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class TrafficControl:
    """Reads and changes what serving applications serve.

    Args:
        admin: Serve's REST API (default: the local platform's, or $RAY_ADDRESS).
        registry: the model registry (default: MLflow's, through `mlplatform.registry`).
        history: the change log (default: MLflow's, through `mlplatform.release.history`).
        clock: seconds since the epoch (tests pass a fake one).
        sleep: how a change waits for another writer (tests pass a fake one).
    """

    def __init__(
        self,
        admin: ServeAdmin | None = None,
        *,
        registry: Registry = registry_module,  # type: ignore[assignment]
        history: History = history_module,  # type: ignore[assignment]
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.admin = admin or ServeAdmin()
        self.registry = registry
        self.history = history
        self.clock = clock
        self.sleep = sleep

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

    def log(self, name: str, *, tracking_uri: str | None = None) -> list[Event]:
        """The application's change log, oldest first."""
        return self.history.read(name, tracking_uri=tracking_uri)

    def rollout(self, name: str) -> RolloutState | None:
        """The rollout in progress in application `name`, if any."""
        uri = self.served(name).args.tracking_uri
        return rollout_state(self.log(name, tracking_uri=uri), self.history.heartbeats(name, tracking_uri=uri))

    def resolve(self, model: str, ref: str, *, tracking_uri: str | None = None) -> str:
        """The concrete version behind a version ('3', 'v3') or an alias ('champion')."""
        ref = str(normalize_version(ref))
        if ref.isdigit():
            return self.registry.resolve_version(model, ref, tracking_uri=tracking_uri)
        return self.registry.resolve_version(model, alias=ref, tracking_uri=tracking_uri)

    # ------------------------------------------------------------------------------------- changing

    def change(
        self,
        name: str,
        plan: Callable[[ServedApp, list[Event]], Plan],
        *,
        action: str,
        reason: str = "",
        by: str = "",
        rollout: dict[str, Any] | None = None,
        expect_seq: int | None = None,
        wait_timeout: float = 600,
    ) -> Event:
        """Make one change to what application `name` serves, through the log (see the module docstring).

        Args:
            name: the Serve application.
            plan: what the change wants, from the application as served and its log; called again when
                another writer changed the application in between.
            action: what the log calls it (traffic, promote, rollback, rollout-step, ...).
            reason: why, for the log.
            by: who (default: the submitting or local user).
            rollout: the rollout this change belongs to (``{"id": ...}``), if any.
            expect_seq: change only if the log's last change is this one (else `ConflictError`): for
                callers that replace the whole policy they had read.
            wait_timeout: longest wait for Serve to run a new config.

        Raises:
            ConfigError: the planned policy is invalid for the application (nothing changed).
            RegistryError: the plan names a version the registry does not have (nothing changed).
            ConflictError: a live rollout owns the application, or others kept changing it.
            PlatformError: Serve refused or failed the change (what served before is restored).
        """
        conflicts = 0
        while conflicts < MAX_ATTEMPTS:
            app = self.served(name)
            uri = app.args.tracking_uri
            log = self.log(name, tracking_uri=uri)
            if self._settle_pending(app, log):
                continue  # waited for, or finished, another writer's change: read again
            state = rollout_state(log, self.history.heartbeats(name, tracking_uri=uri))
            mine = rollout is not None and state is not None and state.id == rollout.get("id")
            if state is not None and not mine and action != "rollout-abort":
                if state.alive(self.clock()):
                    raise ConflictError(
                        f"{name!r} is being rolled out ({state.describe(self.clock())}); wait for it to end, or "
                        f"stop it with `mlplatform rollout abort {name}`"
                    )
                self.abort_rollout(name, reason=f"its process stopped: {state.describe(self.clock())}")
                continue
            if rollout is not None and action != "rollout-start" and not mine:
                raise PlatformError(f"rollout {rollout.get('id')} of {name!r} was stopped by someone else")
            last = log[-1].seq if log else 0
            if expect_seq is not None and last != expect_seq:
                raise ConflictError(
                    f"{name!r} changed since you read it (change {expect_seq}; now {last}: {log[-1].action} by "
                    f"{log[-1].by}); read it again"
                )
            event = self._event(app, log, plan(app, log), action=action, reason=reason, by=by, rollout=rollout)
            # How long others wait for this change before finishing it themselves: a live reconfigure takes
            # seconds; bringing up new versions may take up to two waits for Serve (deploy, then restore).
            adds = set(event.versions) - set(app.versions)
            lease = wait_timeout * 2 + 60 if adds else POLICY_LEASE_S
            claimed = self.history.claim(event, last + 1, tracking_uri=uri, lease_s=lease)
            if claimed is None:
                conflicts += 1  # another writer took change last + 1 since we read the log: plan again on its result
                continue
            return self._apply_claimed(app, claimed, wait_timeout)
        raise ConflictError(
            f"{name!r} was changed by someone else {MAX_ATTEMPTS} times while this change was being made; try again"
        )

    def _event(
        self,
        app: ServedApp,
        log: list[Event],
        plan: Plan,
        *,
        action: str,
        reason: str,
        by: str,
        rollout: dict[str, Any] | None,
    ) -> Event:
        """The change as it will be logged, validated against the versions it leaves deployed."""
        uri = app.args.tracking_uri
        policy = plan.policy
        named = set(policy.get("weights", {})) | set(policy.get("faults", {}) or {})
        if policy.get("shadow"):
            named.add(policy["shadow"]["version"])
        named = {str(normalize_version(v)) for v in named}
        wanted = plan.versions if plan.versions is not None else [*app.versions, *sorted(named)]
        versions = sorted({str(normalize_version(v)) for v in wanted} | named, key=_natural)
        for v in sorted(set(versions) - set(app.versions), key=_natural):
            self.registry.resolve_version(app.args.model_name, v, tracking_uri=uri)  # RegistryError if absent
        try:
            checked = parse_policy(policy, versions)
        except ConfigError as exc:
            raise ConfigError(f"traffic change for {app.name!r} refused: {exc}") from None
        why = plan.reason if plan.reason is not None else reason
        retired = self._idle(app, log, checked, versions) if plan.versions is None else []
        weights = {v: w for v, w in checked.weights.items() if v not in retired}
        if retired:
            versions = [v for v in versions if v not in retired]
            why += f"{'; ' if why else ''}retired {', '.join('v' + v for v in retired)}: no traffic for "
            why += f"{app.args.retire_after_s:g}s"
        aliases = {**self.registry.aliases_of(app.args.model_name, tracking_uri=uri), **plan.move_aliases}
        return Event(
            app=app.name,
            model=app.args.model_name,
            action=action,
            weights=weights,
            shadow=checked.shadow.model_dump() if checked.shadow else None,
            faults={v: f.model_dump() for v, f in checked.faults.items()},
            aliases={a: v for a, v in aliases.items() if v is not None},
            reason=why[:1000],  # the log keeps it in a param (6 000 characters at most, the event included)
            by=by or who(),
            versions=versions,
            move_aliases=dict(plan.move_aliases),  # type: ignore[arg-type]
            rollout=rollout,
        )

    def _idle(self, app: ServedApp, log: list[Event], policy: TrafficPolicy, versions: list[str]) -> list[str]:
        """Versions to retire with this change: no weight, not the shadow and no fault in the new policy, no
        traffic in the log for `retire_after_s`, and no request pinned to them since (router replicas say)."""
        after = app.args.retire_after_s
        if after is None:
            return []
        now = self.clock()
        shadow = policy.shadow.version if policy.shadow else None
        candidates = [v for v in versions if policy.weights.get(v, 0) == 0 and v != shadow and v not in policy.faults]
        idle = []
        for v in candidates:
            used = [
                e
                for e in log
                if e.applied
                and (e.weights.get(v, 0) > 0 or (e.shadow or {}).get("version") == v or v not in _before(log, e))
            ]
            last = epoch_of(used[-1].at) if used else None
            if last is not None and now - last > after:
                idle.append(v)
        if not idle:
            return []
        answers = self.admin.router_status(app.name, app.args.model_name, tries=4 * app.args.ingress_num_replicas)
        if not answers:
            return []  # cannot tell whether clients still pin them: keep them
        pinned = {v: max(float(a.get("last_pinned", {}).get(v, 0)) for a in answers) for v in idle}
        return [v for v in idle if now - pinned[v] > after]

    def _apply_claimed(self, app: ServedApp, event: Event, wait_timeout: float) -> Event:
        uri = app.args.tracking_uri
        try:
            self._apply(app, event, wait_timeout)
        except PlatformError as exc:
            self.history.settle(event, f"failed: {exc}", tracking_uri=uri)
            raise
        self.history.settle(event, "applied", tracking_uri=uri)
        return replace(event, status="applied")

    def _apply(self, app: ServedApp, event: Event, wait_timeout: float) -> None:
        """Make Serve run `event`'s state, then move its aliases. Idempotent: finishing a change twice is fine."""
        add = [v for v in event.versions if v not in app.versions]
        if add:
            # New versions come up with no traffic first: one that fails to load must not get any, and the
            # config goes back to what served before so that Serve stops retrying it.
            policy = app.policy.model_dump(mode="json", exclude_none=True)
            before = self._put(_config(app, policy, add, []), app.args.tracking_uri)
            try:
                self.admin.wait(app.name, before, timeout=wait_timeout)
            except PlatformError as exc:
                self.admin.wait(app.name, self._put(app.config, app.args.tracking_uri), timeout=wait_timeout)
                raise PlatformError(
                    f"version(s) {', '.join('v' + v for v in add)} of {app.args.model_name!r} failed to deploy, so "
                    f"{app.name!r} keeps its previous traffic: {exc}"
                ) from None
            app = self.served(app.name)
        retire = [v for v in app.versions if v not in event.versions]
        if retire or parse_policy(event.policy(), app.versions) != app.policy:
            before = self._put(_config(app, event.policy(), [], retire), app.args.tracking_uri)
            self.admin.wait(app.name, before, timeout=wait_timeout)
        if event.move_aliases:
            self.registry.set_aliases(app.args.model_name, event.move_aliases, tracking_uri=app.args.tracking_uri)

    def _put(
        self, config: dict[str, Any], tracking_uri: str | None, http_options: dict[str, Any] | None = None
    ) -> float:
        """Put an application's new config, the cluster's other applications as they are now (under the config's
        lock: a change to another application at the same moment must not be put back stale, nor ours by it)."""
        with self.history.serve_config_lock(tracking_uri=tracking_uri):
            return self.admin.apply(config, http_options=http_options)

    def _settle_pending(self, app: ServedApp, log: list[Event]) -> bool:
        """Deal with a change someone claimed and has not settled; True when the log may have moved since."""
        pending = next((e for e in reversed(log) if e.pending), None)
        if pending is None:
            return False
        if pending.lease_until > self.clock():
            self.sleep(0.5)  # its writer is (presumably) applying it: wait, then read again
            return True
        # Its writer died half-way: finish the change it declared (a controller reconciling), and say who did.
        try:
            self._apply(app, pending, wait_timeout=600)
        except PlatformError as exc:
            self.history.settle(pending, f"failed: {exc}", tracking_uri=app.args.tracking_uri)
        else:
            self.history.settle(pending, "applied", tracking_uri=app.args.tracking_uri)
        return True

    # ------------------------------------------------------------------------------------ changes

    def apply_policy(
        self,
        name: str,
        policy: dict[str, Any],
        *,
        action: str,
        reason: str = "",
        move_aliases: dict[str, str | None] | None = None,
        by: str = "",
        rollout: dict[str, Any] | None = None,
        expect_seq: int | None = None,
        wait_timeout: float = 600,
    ) -> Event:
        """Replace the whole traffic policy of `name` (versions it names that are not deployed are added)."""
        return self.change(
            name,
            lambda app, log: Plan(policy, move_aliases or {}),
            action=action,
            reason=reason,
            by=by,
            rollout=rollout,
            expect_seq=expect_seq,
            wait_timeout=wait_timeout,
        )

    def set_traffic(
        self,
        name: str,
        weights: dict[str, float] | None = None,
        *,
        shadow: dict[str, Any] | None | bool = False,
        faults: dict[str, Any] | None = None,
        clear_faults: bool = False,
        reason: str = "",
    ) -> Event:
        """Change some of the policy and keep the rest (as it is when the change lands, not when it was asked):
        weights, shadow (None clears, False keeps), faults (version → spec; None or abort_percent 0 clears
        that version's fault; `clear_faults` clears them all)."""

        def plan(app: ServedApp, log: list[Event]) -> Plan:
            current = app.policy
            policy: dict[str, Any] = {"weights": weights if weights is not None else current.weights}
            if shadow is False:
                if current.shadow is not None:
                    policy["shadow"] = current.shadow.model_dump()
            elif shadow is not None:
                policy["shadow"] = shadow
            merged = {} if clear_faults else {v: f.model_dump() for v, f in current.faults.items()}
            merged |= {str(normalize_version(v)): f for v, f in (faults or {}).items()}
            merged = {v: f for v, f in merged.items() if f and f.get("abort_percent", 0) > 0}
            if merged:
                policy["faults"] = merged
            return Plan(policy)

        return self.change(name, plan, action="traffic", reason=reason)

    def promote(self, name: str, version: str, *, reason: str = "", action: str = "promote") -> Event:
        """Send all traffic to `version` and make it the champion; the old champion becomes `previous`.

        A `challenger` alias left on the new champion is removed, so that the standard Serve config (champion
        + challenger) can be deployed again.
        """
        version = str(normalize_version(version))

        def plan(app: ServedApp, log: list[Event]) -> Plan:
            policy: dict[str, Any] = {"weights": {version: 100.0}}
            if app.policy.shadow is not None and app.policy.shadow.version != version:
                policy["shadow"] = app.policy.shadow.model_dump()
            aliases = self.registry.aliases_of(app.args.model_name, tracking_uri=app.args.tracking_uri)
            return Plan(policy, promotion_aliases(aliases, version))

        return self.change(name, plan, action=action, reason=reason or f"promote v{version}")

    def rollback(self, name: str, *, reason: str = "") -> Event:
        """Restore the state before the latest change (traffic policy, aliases, versions) from the log.

        Rolling back twice returns to where the first rollback started, as `kubectl rollout undo` does; a
        version retired since is deployed again.

        Raises:
            PlatformError: the log holds no earlier, different state.
        """

        def plan(app: ServedApp, log: list[Event]) -> Plan:
            applied = [e for e in log if e.applied]
            if not applied:
                raise PlatformError(f"application {name!r} has no deployment history to roll back with")
            current = applied[-1]
            target = next((e for e in reversed(applied[:-1]) if e.state() != current.state()), None)
            if target is None:
                raise PlatformError(
                    f"application {name!r} has no earlier state to roll back to "
                    f"({len(applied)} change(s), all the same)"
                )
            moves: dict[str, str | None] = {}
            if target.aliases != current.aliases:
                moves = {**dict.fromkeys(set(current.aliases) - set(target.aliases)), **target.aliases}
            why = reason or f"rollback to the state of {target.at} ({target.action} by {target.by})"
            # The versions that state served, retired ones included: they are deployed again.
            return Plan(target.policy(), moves, versions=target.versions or None, reason=why)

        return self.change(name, plan, action="rollback")

    def deploy(
        self,
        config: dict[str, Any],
        args: AppArgs,
        *,
        reason: str = "",
        http_options: dict[str, Any] | None = None,
        wait_timeout: float = 600,
    ) -> Event:
        """Deploy a whole application config (new or replacing one), through the same log as every change.

        Args:
            config: the application's Serve config, versions concrete and the policy in the router's user_config.
            args: its validated args.

        Raises:
            ConflictError: a live rollout owns the application, or others kept changing it.
            PlatformError: Serve failed to deploy it.
        """
        name, uri = config["name"], args.tracking_uri
        conflicts = 0
        while conflicts < MAX_ATTEMPTS:
            log = self.log(name, tracking_uri=uri)
            try:
                app: ServedApp | None = self.served(name)
            except PlatformError:
                app = None  # a first deploy (or the application was deleted)
            pending = next((e for e in reversed(log) if e.pending), None)
            if pending is not None and app is not None and self._settle_pending(app, log):
                continue
            if pending is not None and app is None:
                self.history.settle(pending, "failed: the application was gone", tracking_uri=uri)
                continue
            state = rollout_state(log, self.history.heartbeats(name, tracking_uri=uri))
            if state is not None and state.alive(self.clock()):
                raise ConflictError(f"{name!r} is being rolled out ({state.describe(self.clock())}); abort it first")
            versions = [v.version for v in args.versions if v.version is not None]
            policy = parse_policy(args.default_policy(), versions)
            event = Event(
                app=name,
                model=args.model_name,
                action="deploy",
                weights=dict(policy.weights),
                shadow=policy.shadow.model_dump() if policy.shadow else None,
                aliases=self.registry.aliases_of(args.model_name, tracking_uri=uri),
                reason=reason,
                by=who(),
                versions=versions,
                # A deploy ends any rollout whose process died: the config it deploys is the new truth.
                rollout={"id": state.id, "ended_by_deploy": True} if state is not None else None,
            )
            claimed = self.history.claim(event, (log[-1].seq if log else 0) + 1, tracking_uri=uri)
            if claimed is None:
                conflicts += 1
                continue
            try:
                self.admin.wait(name, self._put(config, uri, http_options), timeout=wait_timeout)
            except PlatformError as exc:
                self.history.settle(claimed, f"failed: {exc}", tracking_uri=uri)
                raise
            self.history.settle(claimed, "applied", tracking_uri=uri)
            return replace(claimed, status="applied")
        raise ConflictError(f"{name!r} was changed by someone else {MAX_ATTEMPTS} times during this deploy; try again")

    def abort_rollout(self, name: str, *, reason: str = "") -> Event:
        """Undo the rollout in progress in `name`: the policy it started from comes back.

        Raises:
            PlatformError: no rollout is in progress.
        """
        state = self.rollout(name)
        if state is None:
            raise PlatformError(f"no rollout in progress in {name!r}")
        return self.change(
            name,
            lambda app, log: Plan(state.start_policy),
            action="rollout-abort",
            reason=reason or f"rollout {state.id} of v{state.canary} aborted by {who()}",
            rollout={"id": state.id},
        )


def promotion_aliases(aliases: dict[str, str], version: str) -> dict[str, str | None]:
    """Alias moves that make `version` the champion: the old champion becomes `previous`, and a challenger
    alias on `version` goes (a Serve config of champion + challenger must not name one version twice)."""
    old = aliases.get(CHAMPION)
    moves: dict[str, str | None] = {CHAMPION: version}
    if old and old != version:
        moves[PREVIOUS] = old
    if aliases.get(CHALLENGER) == version:
        moves[CHALLENGER] = None
    return moves


def _config(app: ServedApp, policy: dict[str, Any], add: list[str], retire: list[str]) -> dict[str, Any]:
    """The app's config with `policy` as the router's user_config, versions `add` deployed and `retire` gone."""
    config = copy.deepcopy(app.config)
    args = dict(config["args"])
    template = app.args.versions[0]
    args["versions"] = [
        *(v for v in args["versions"] if str(v.get("version")) not in retire),
        *(
            template.model_copy(update={"version": v, "alias": None, "weight": 0.0, "shadow": False}).model_dump(
                mode="json", exclude_none=True
            )
            for v in add
        ),
    ]
    if retire:
        # The versions' weights in args only seed a first deploy (they must still sum to 100): with a version
        # gone, take them from the policy. Otherwise args stay as they are, so that a change of the policy
        # alone is a user_config change (reconfigure, no replica restart).
        weights = policy.get("weights", {})
        args["versions"] = [{**v, "weight": float(weights.get(str(v["version"]), 0.0))} for v in args["versions"]]
    config["args"] = args
    user_config = {k: v for k, v in policy.items() if v not in (None, {})}
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


def new_rollout_id() -> str:
    return uuid.uuid4().hex[:12]
