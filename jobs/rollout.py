"""Job entrypoint: a progressive rollout of a canary version. Thin on purpose; see mlplatform.release.rollout.

Runs inside the cluster (it reads every node's metrics). Submit with either CLI:
  mlplatform submit rollout --config jobs/configs/rollout.yaml
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/rollout.py --config jobs/configs/rollout.yaml
"""

import _bootstrap  # noqa: F401  (makes platform/ importable when the package is not installed)
from mlplatform.launch import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("rollout"))
