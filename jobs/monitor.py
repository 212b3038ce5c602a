"""Job entrypoint: continuous training of one application. Thin on purpose; see mlplatform.monitor.loop.

One pass (drift → retrain → gate → canary → promote or roll back), or one every --every. Submit with:
  mlplatform monitor --config jobs/configs/monitor.yaml [--every 10m] [--force]
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/monitor.py --config jobs/configs/monitor.yaml
"""

import _bootstrap  # noqa: F401  (makes platform/ importable when the package is not installed)
from mlplatform.launch import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("monitor"))
