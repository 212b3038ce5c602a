"""Evidently's data-drift preset on two Parquet files; run by benchmarks/drift.py in Evidently's own venv.

    benchmarks/results/venv-evidently/bin/python benchmarks/_evidently_drift.py REF CUR --categorical a,b \
        [--num-method ks] [--cat-method chisquare] [--psi]

Evidently 0.7 (`evidently.Report`, `evidently.presets.DataDriftPreset`): `Report([DataDriftPreset(...)]).run(current,
reference)` returns a Snapshot whose top-level metrics are one `DriftedColumnsCount` and one `ValueDrift(column=...)`
per column; a ValueDrift's value is its stattest's score (a p-value for ks / chisquare, a distance otherwise), its
config the column, the stattest's display name and the threshold. Timed: reading both files with pandas + the
report run (which also renders its widgets). Prints one JSON line: seconds, peak RSS, the evidently version, the
drifted columns count, and per column the stattest, threshold and score. `--psi` also computes Evidently's own PSI
for every column afterwards (untimed), to show how its binning differs from ours.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("reference")
    p.add_argument("current")
    p.add_argument("--categorical", default="")
    p.add_argument("--num-method", default=None)
    p.add_argument("--cat-method", default=None)
    p.add_argument("--psi", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    start = time.perf_counter()
    ref = pd.read_parquet(args.reference)
    cur = pd.read_parquet(args.current)
    categorical = [c for c in args.categorical.split(",") if c]
    definition = DataDefinition(
        numerical_columns=[c for c in ref.columns if c not in categorical], categorical_columns=categorical
    )
    read_s = time.perf_counter() - start
    report = Report([DataDriftPreset(num_method=args.num_method, cat_method=args.cat_method)])
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition)
    )
    seconds = time.perf_counter() - start

    columns: dict = {}
    drifted = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):  # config: column, method (display name), threshold
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "score": float(metric["value"]),
            }
        elif config["type"].endswith(":DriftedColumnsCount"):
            drifted = metric["value"]

    if args.psi:
        from evidently.legacy.calculations.stattests import psi_stat_test
        from evidently.legacy.core import ColumnType

        for name in ref.columns:
            kind = ColumnType.Categorical if name in categorical else ColumnType.Numerical
            r, c = ref[name].dropna(), cur[name].dropna()
            columns.setdefault(name, {})["psi"] = float(psi_stat_test(r, c, kind, None).drift_score)

    with open("/proc/self/status") as f:
        rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_mb": rss_mb,
                "read_s": read_s,
                "version": evidently.__version__,
                "drifted_columns": drifted,
                "columns": columns,
            }
        )
    )


if __name__ == "__main__":
    main()
