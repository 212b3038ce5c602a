"""How the platform's own processes import XGBoost: without scikit-learn.

`import xgboost` imports scikit-learn, and with it most of SciPy, only to give its sklearn-API estimators
their base classes: ≈ 3 s of CPU in every process that imports it on a 2-core machine (xgboost, pandas,
pyarrow and ray: 4.9–6.1 s → 1.9–2.1 s without it, measured 2026-11-28). The platform trains, registers and
serves `xgboost.Booster`s only, and a pipeline starts a dozen such processes (the job's driver, each trial's
worker, each replica, each scoring actor), so its own processes import XGBoost with scikit-learn hidden.
XGBoost's estimators still work there, as the plain classes XGBoost defines when scikit-learn is absent; a
later `import sklearn` in the process works as usual.

Only processes that are the platform's: Ray workers (they run its trials, replicas and actors) and the ones
that said so with `own_process()` (the CLI and the job entrypoints). Anywhere else — a notebook that imports
mlplatform — it is a plain `import xgboost`, so a user's XGBClassifier stays a scikit-learn estimator.
"""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["own_process", "xgboost"]

_OWN = False


def own_process() -> None:
    """Declare this process the platform's own (its CLI, a job's entrypoint): `xgboost()` may hide scikit-learn."""
    global _OWN
    _OWN = True


def _in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return ray._private.worker.global_worker.mode == ray.WORKER_MODE
    except AttributeError:
        return False


def xgboost() -> ModuleType:
    """The `xgboost` module, imported without scikit-learn where this process is the platform's own."""
    module = sys.modules.get("xgboost")
    if module is not None:
        return module
    if (_OWN or _in_ray_worker()) and "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  (an import of it raises ImportError)
        try:
            import xgboost
        finally:
            if sys.modules.get("sklearn", 0) is None:
                del sys.modules["sklearn"]
        return xgboost
    import xgboost

    return xgboost
