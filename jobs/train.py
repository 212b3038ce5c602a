"""Job entrypoint: the train step. Thin on purpose; the work lives in mlplatform.pipeline.

Submit with either CLI (token auth is on; `mlplatform` sends the token itself):
  mlplatform submit train --config jobs/configs/demo.yaml
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/train.py --config jobs/configs/demo.yaml
"""

import _bootstrap  # noqa: F401  (makes platform/ importable when the package is not installed)
from mlplatform.launch import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("train"))
