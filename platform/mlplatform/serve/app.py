"""The builder of a serving application: one `ModelVersion` deployment per version behind a `Router` ingress.

The router's user_config holds the traffic policy, so a config that only changes it (``deployments:
[{name: <model>-router, user_config: {weights: ...}}]``) re-weights traffic without restarting any replica.

`make_app` takes what the data plane cannot know by itself as arguments: the model loader, how a traffic
change is applied cluster-wide (the release control plane passes its own, see
`mlplatform.release.app.build_app`) and the observers of every answered request. `build_app` is the data
plane alone: its admin route can show the policy but not change it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig

from mlplatform import registry
from mlplatform.data.schema import SCHEMA_FILE, InputSchema
from mlplatform.errors import ConfigError
from mlplatform.registry import load_booster
from mlplatform.serve.config import AppArgs, VersionSpec
from mlplatform.serve.endpoint import Router
from mlplatform.serve.model import Loader, ModelVersion
from mlplatform.serve.router import PolicyApplier, RequestObserver
from mlplatform.settings import MLFLOW_TRACKING_URI

__all__ = ["build_app", "make_app", "resolve_app_args", "resolve_input_schema"]

#: ``(model_name, version, alias, *, tracking_uri) -> concrete version``, as `registry.resolve_version`.
Resolver = Callable[..., str]

#: Requests a router replica handles at once; it mostly awaits the version replicas, so this is high.
ROUTER_MAX_ONGOING = 256


def resolve_app_args(
    args: dict[str, Any] | AppArgs,
    *,
    features: list[str] | None = None,
    resolver: Resolver = registry.resolve_version,
) -> tuple[AppArgs, list[str]]:
    """Validate `args` and pin what the registry decides: versions behind aliases, features, tracking URI.

    Args:
        args: the application args (a dict as in a Serve config, or AppArgs).
        features: override of the feature list (skips the registry signature look-up).
        resolver: turns a version or alias into a concrete version (default: the MLflow registry).

    Returns:
        (AppArgs whose versions are concrete and whose features are set, the features).

    Raises:
        pydantic.ValidationError: `args` is invalid; the error names the field.
        mlplatform.errors.RegistryError: a version or alias does not exist.
        ConfigError: two entries resolve to the same version, or versions disagree on their features.
    """
    parsed = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    tracking_uri = parsed.tracking_uri or MLFLOW_TRACKING_URI.get() or None
    features = list(features) if features is not None else parsed.features

    resolved: list[VersionSpec] = []
    seen: dict[str, str] = {}
    for spec in parsed.versions:
        version = str(resolver(parsed.model_name, spec.version, spec.alias, tracking_uri=tracking_uri))
        if version in seen:
            raise ConfigError(f"{seen[version]} and {spec.label} both resolve to version {version}; serve it once")
        seen[version] = spec.label
        resolved.append(spec.model_copy(update={"version": version, "alias": None}))

    if features is None:
        # Every version must take the same inputs, or the router would feed one of them the wrong columns.
        signatures = {
            v.version: registry.model_features(parsed.model_name, v.version, tracking_uri=tracking_uri)  # type: ignore[arg-type]
            for v in resolved
        }
        features = signatures[resolved[0].version]  # type: ignore[index]
        differ = {v: f for v, f in signatures.items() if f != features}
        if differ:
            raise ConfigError(
                f"versions of {parsed.model_name!r} take different features: {signatures}; serve them in separate apps"
            )

    out = AppArgs.model_validate(
        {
            **parsed.model_dump(),
            "tracking_uri": tracking_uri,
            "versions": [v.model_dump() for v in resolved],
            "features": features,
        }
    )
    return out, list(features)


def resolve_input_schema(args: AppArgs, features: list[str]) -> InputSchema | None:
    """The input schema the endpoint serves: the one every version was registered with (`input_schema.json`).

    Versions registered without one take their features as numbers; with one, its categoricals take raw values.

    Raises:
        ConfigError: a schema disagrees with the features, or versions encode a categorical differently (one
            endpoint encodes a value one way; serve such versions in separate applications).
    """
    schemas: dict[str, InputSchema] = {}
    for spec in args.versions:
        assert spec.version is not None
        text = registry.model_extra_file(args.model_name, spec.version, SCHEMA_FILE, tracking_uri=args.tracking_uri)
        if text is None:
            continue
        try:
            schema = InputSchema.model_validate_json(text)
        except ValueError as exc:
            raise ConfigError(f"v{spec.version} of {args.model_name!r} has a malformed {SCHEMA_FILE}: {exc}") from None
        if schema.names != features:
            raise ConfigError(
                f"v{spec.version} of {args.model_name!r}: its {SCHEMA_FILE} lists {schema.names}, "
                f"its signature {features}"
            )
        schemas[spec.version] = schema
    if not schemas:
        return None
    first, schema = next(iter(schemas.items()))
    for version, other in schemas.items():
        if (other.task, other.classes) != (schema.task, schema.classes):
            raise ConfigError(
                f"versions of {args.model_name!r} answer differently (v{first}: {schema.task} {schema.classes}, "
                f"v{version}: {other.task} {other.classes}); serve them in separate applications"
            )
        if other.categories() != schema.categories():
            raise ConfigError(
                f"versions of {args.model_name!r} encode categories differently (v{first}: {schema.categories()}, "
                f"v{version}: {other.categories()}); serve them in separate apps"
            )
    return schema


def make_app(
    args: dict[str, Any] | AppArgs,
    *,
    loader: Loader = load_booster,
    features: list[str] | None = None,
    schema: InputSchema | None = None,
    resolver: Resolver = registry.resolve_version,
    apply_policy: PolicyApplier | None = None,
    observers: Sequence[RequestObserver] = (),
) -> serve.Application:
    """Bind the application with its dependencies injected.

    Args:
        args: the application args.
        loader: ``(model_uri, tracking_uri) -> xgboost.Booster`` run on each version replica.
        features: override of the feature list (and of the registry's input schema: `schema` then applies).
        schema: the input schema when `features` is given (None: every feature takes numbers).
        resolver: version/alias → concrete version (default: the MLflow registry).
        apply_policy: how the router's admin route changes traffic cluster-wide (None: it answers 503).
        observers: called by the router with every answered request.

    Returns:
        The bound application (router + one deployment per version).
    """
    from_registry = features is None
    resolved, features = resolve_app_args(args, features=features, resolver=resolver)
    if from_registry:
        schema = resolve_input_schema(resolved, features)
    name = resolved.model_name
    handles = {}
    for spec in [] if resolved.colocate else resolved.versions:
        assert spec.version is not None
        scaling: dict[str, Any] = (
            {"autoscaling_config": spec.autoscaling_config}
            if spec.autoscaling_config is not None
            else {"num_replicas": spec.num_replicas}
        )
        handles[spec.version] = ModelVersion.options(
            name=f"{name}-v{spec.version}",
            **scaling,
            ray_actor_options={"num_cpus": spec.num_cpus},
            # Room for one batch being predicted while the next one fills (Serve's default is 5 in flight).
            max_ongoing_requests=2 * spec.max_batch_size,
            user_config={
                "max_batch_size": spec.max_batch_size,
                "batch_wait_timeout_s": spec.batch_wait_timeout_s,
            },
        ).bind(
            name,
            spec.version,
            resolved.tracking_uri,
            loader=loader,
            features=features,
            nthread=max(1, int(spec.num_cpus)),
        )
    return Router.options(
        name=resolved.router,
        num_replicas=resolved.ingress_num_replicas,
        ray_actor_options={"num_cpus": resolved.ingress_num_cpus},
        max_ongoing_requests=ROUTER_MAX_ONGOING,
        # A bounded wait: past it Serve answers 503 with Retry-After itself, before the request costs anything.
        max_queued_requests=resolved.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=resolved.retry_after_s),
        user_config=resolved.default_policy(),
    ).bind(
        resolved.model_dump(mode="json"),
        features,
        handles,
        loader=loader if resolved.colocate else None,
        apply_policy=apply_policy,
        observers=list(observers),
        schema=schema.model_dump(mode="json") if schema is not None else None,
    )


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """The data plane alone, from Serve config `args`: traffic changes go through Serve configs, not its admin route.

    Serve configs of mlplatform use `mlplatform.release.app:build_app`, whose admin route can change traffic.

    Raises:
        pydantic.ValidationError: `args` is invalid; the error names the field.
        mlplatform.errors.RegistryError: a version or alias does not exist in the registry.
    """
    return make_app(args)
