"""What every training mode shares: the checkpoint file, the held-out split, CPU room (the metric is the task's)."""

from __future__ import annotations

import pandas as pd

__all__ = ["MODEL_FILE", "DATA_RESERVE_CPUS", "split_frame"]
#: A trial checkpoint's booster, in XGBoost's own format (never pickle).
MODEL_FILE = "model.ubj"
#: CPUs that must stay free of data-parallel workers for Ray Data to stream their shards at all (its file
#: listing asks for a whole one, and it budgets only what the workers leave).
DATA_RESERVE_CPUS = 1.0


def split_frame(batch: pd.DataFrame, key: str, fraction: float, validation: bool) -> pd.DataFrame:
    """The rows of `batch` on one side of the held-out split: a hash of the key, so stable across runs and modes."""
    bucket = pd.util.hash_pandas_object(batch[key], index=False).to_numpy() % 1000
    val = bucket < int(fraction * 1000)
    return batch.loc[val if validation else ~val].reset_index(drop=True)
