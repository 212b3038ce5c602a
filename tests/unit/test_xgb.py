"""The platform's own processes import XGBoost without scikit-learn; anyone else's import it as usual."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
from mlplatform.xgb import own_process, xgboost

def check():
    xgb = xgboost()
    import numpy as np
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 2)
    hidden = ("sklearn" not in sys.modules, not xgb.compat.SKLEARN_INSTALLED, len(booster.save_raw("ubj")) > 0)
    import sklearn  # still importable afterwards
    return hidden
"""

CASES = {
    "own-process": ("own_process(); print(check())", "(True, True, True)"),  # the CLI, a job's entrypoint
    # A Ray worker runs the platform's trials, replicas and actors; the driver that started it is not ours.
    "ray-worker": (
        'import ray; ray.init(address="local", num_cpus=1, include_dashboard=False)\n'
        "print(ray.get(ray.remote(check).remote()), check())",
        "(True, True, True) (False, False, True)",
    ),
    # A notebook that imports mlplatform: XGBoost's estimators stay scikit-learn estimators.
    "someone-elses": ("print(check())", "(False, False, True)"),
}


@pytest.mark.parametrize("case", CASES)
def test_xgboost_hides_scikit_learn_only_in_the_platforms_processes(case):
    code, expected = CASES[case]
    out = subprocess.run([sys.executable, "-c", CHECK + code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected
