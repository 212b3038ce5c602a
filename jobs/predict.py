"""Job entrypoint: batch scoring of a file by a registered model version. Thin on purpose; the work lives in
mlplatform.serve.batch.

  mlplatform predict --model churn@champion --input data.csv --out scores/
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
      python jobs/predict.py --model churn@champion --input /abs/data.csv --out /abs/scores
"""

import _bootstrap  # noqa: F401  (makes platform/ importable when the package is not installed)
from mlplatform.launch import predict_main

if __name__ == "__main__":
    raise SystemExit(predict_main())
