# ruff: noqa: E501  (the pyarrow baseline is an embedded script, kept compact to read in one screen)
"""Ingest benchmark: mlplatform (Ray Data) vs a single-process pyarrow pipeline doing the same work.

    python benchmarks/ingest.py [--entities 500000,2000000] [--skip-cluster]

For each size the sample-data generator writes the four tabular sources (one joined row per entity; ~4
events, ~3 transactions and 8 readings per entity); the spec is the demo's without its text and image
sources and window features, so that both sides do the same work. Then, each in its own process so that peak RSS is its own:

  mlplatform   `ingest()` of the demo spec on `ray.init(num_cpus=2)`: read, contract, quarantine,
               aggregate, join, fingerprint, profile, write.
  pyarrow      one process: read (CSV as text, JSON lines parsed per line as mlplatform does, Parquet),
               the same checks with pyarrow.compute, the same aggregations (`Table.group_by`), join,
               write the table and the quarantine. No profile, no fingerprint.
  cluster      (largest size) mlplatform on a `ray.cluster_utils.Cluster`: head + 2 workers × 1 CPU;
               its fingerprint must equal the 2-CPU run's.

Reports joined rows per second, the ratio, and peak driver RSS. Writes benchmarks/results/ingest-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _record import save

ROOT = Path(__file__).resolve().parents[1]

# ru_maxrss survives exec (a child forked from this big process would report our peak), VmHWM does not.
PEAK_RSS = """
def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
"""

MLPLATFORM = (
    PEAK_RSS
    + """
import json, os, sys, time, ray
from mlplatform.config import load_config
from mlplatform.data.ingest import ingest
from mlplatform.pipeline import PipelineConfig
home, address = sys.argv[1], sys.argv[2]
os.environ["MLPLATFORM_HOME"] = home  # the demo spec's paths are under ${{MLPLATFORM_HOME}}
cfg = load_config({config!r}, PipelineConfig).data
# The four tabular sources and the features the pyarrow baseline computes too (no text, images or windows).
sources = [s.model_copy(update={{"features": [f for f in s.features if f.window is None and f.agg != "last"]}})
           for s in cfg.sources if s.format not in ("text", "image")]
cfg = cfg.model_copy(update={{"sources": sources, "output_dir": home + "/out-" + str(time.time())}})
if address == "local":
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
else:
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
from ray.data import DataContext
DataContext.get_current().enable_progress_bars = False
start = time.perf_counter()
v = ingest(cfg)
print(json.dumps({{"seconds": time.perf_counter() - start, "rows": v.manifest["rows"], "fingerprint": v.fingerprint,
                  "rss_mb": peak_rss_mb(), "by_step": v.manifest["seconds_by_step"]}}))
"""
)

PYARROW = (
    PEAK_RSS
    + r"""
import json, sys, time
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as pacsv, pyarrow.parquet as pq
home = sys.argv[1]
d = home + "/data/demo"
start = time.perf_counter()
bad = []

def num(col, integer=False, lo=None, hi=None):
    # Cast text to float; what does not parse, is missing, or is out of range is invalid.
    as_text = pc.cast(col, pa.string()) if col.type != pa.string() else col
    parsed = pc.cast(pc.if_else(pc.match_substring_regex(as_text, r"^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$"), as_text,
                                pa.scalar(None, pa.string())), pa.float64())
    ok = pc.is_valid(parsed)
    if integer:
        ok = pc.and_(ok, pc.equal(pc.floor(parsed), parsed))
    if lo is not None:
        ok = pc.and_(ok, pc.greater_equal(parsed, lo))
    if hi is not None:
        ok = pc.and_(ok, pc.less_equal(parsed, hi))
    return parsed, pc.fill_null(ok, False)

def keep(table, ok, source):
    bad.append(pa.table({"source": pa.array([source] * (len(table) - pc.sum(ok).as_py())),
                         "reason": pa.array(["contract"] * (len(table) - pc.sum(ok).as_py()))}))
    return table.filter(ok)

text = lambda cols: pacsv.ConvertOptions(column_types={c: pa.string() for c in cols}, strings_can_be_null=False)
prof = pacsv.read_csv(d + "/profiles.csv", convert_options=text(["entity_id", "age", "plan", "tenure_months", "churned"]))
eid, ok1 = num(prof["entity_id"], True, 1)
age, ok2 = num(prof["age"], True, 18, 120)
ten, ok3 = num(prof["tenure_months"], False, 0)
lab, ok4 = num(prof["churned"], True, 0, 1)
ok5 = pc.is_in(prof["plan"], pa.array(["basic", "pro", "enterprise"]))
ok = pc.and_(pc.and_(pc.and_(ok1, ok2), pc.and_(ok3, ok4)), ok5)
base = keep(pa.table({"entity_id": pc.cast(eid, pa.int64()), "age": age, "plan": pc.cast(pc.index_in(prof["plan"],
            pa.array(["basic", "pro", "enterprise"])), pa.float64()), "tenure_months": ten, "churned": pc.cast(lab, pa.int64())}), ok, "profiles")

ids, types, durs = [], [], []
with open(d + "/events.jsonl", encoding="utf-8") as f:
    for line in f:
        try:
            o = json.loads(line); ids.append((o.get("user") or {}).get("id")); types.append((o.get("event") or {}).get("type"))
            durs.append((o.get("event") or {}).get("duration_s"))
        except ValueError:
            ids.append(None); types.append(None); durs.append(None)
ev = pa.table({"entity_id": pa.array([str(x) if x is not None else None for x in ids]),
               "type": pa.array(types, pa.string()), "dur": pa.array([str(x) if x is not None else None for x in durs])})
e_id, a = num(ev["entity_id"], True, 1); e_dur, b = num(ev["dur"], False, 0)
ok = pc.and_(pc.and_(a, b), pc.fill_null(pc.is_in(ev["type"], pa.array(["login", "view", "purchase", "support"])), False))
events = keep(pa.table({"entity_id": pc.cast(e_id, pa.int64()), "dur": e_dur}), ok, "events")
ev_agg = events.group_by("entity_id").aggregate([("dur", "count"), ("dur", "mean"), ("dur", "sum")])

tx = pq.read_table(d + "/transactions.parquet")
ok = pc.fill_null(pc.and_(pc.greater_equal(tx["entity_id"], 1), pc.greater_equal(tx["amount"], 0)), False)
tx = keep(tx, ok, "transactions")
tx_agg = tx.group_by("entity_id").aggregate([("amount", "count"), ("amount", "sum"), ("amount", "max")])

rd = pacsv.read_csv(d + "/readings.csv", convert_options=text(["entity_id", "day", "usage"]))
r_id, a = num(rd["entity_id"], True, 1); day, b = num(rd["day"], True, 0); use, c = num(rd["usage"], False, 0)
rd = keep(pa.table({"entity_id": pc.cast(r_id, pa.int64()), "x": day, "y": use,
                    "xy": pc.multiply(day, use), "xx": pc.multiply(day, day)}), pc.and_(pc.and_(a, b), c), "readings")
rd_agg = rd.group_by("entity_id").aggregate([("y", "mean"), ("x", "sum"), ("y", "sum"), ("xy", "sum"), ("xx", "sum"),
                                            ("x", "count")])
n, sx, sy, sxy, sxx = (rd_agg[c].to_numpy() for c in ("x_count", "x_sum", "y_sum", "xy_sum", "xx_sum"))
den = n * sxx - sx * sx
rd_agg = rd_agg.append_column("usage_trend", pa.array(np.where(den > 0, (n * sxy - sx * sy) / np.where(den > 0, den, 1), np.nan)))

table = base.join(ev_agg, "entity_id", join_type="left outer").join(tx_agg, "entity_id", join_type="left outer")
table = table.join(rd_agg.select(["entity_id", "y_mean", "usage_trend"]), "entity_id", join_type="left outer")
pq.write_table(table, home + "/pyarrow_table.parquet")
pq.write_table(pa.concat_tables(bad), home + "/pyarrow_quarantine.parquet")
print(json.dumps({"seconds": time.perf_counter() - start, "rows": table.num_rows, "rss_mb": peak_rss_mb()}))
"""
)


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", default="500000,2000000")
    p.add_argument("--skip-cluster", action="store_true")
    args = p.parse_args()
    from mlplatform.tools.sample_data import generate

    config = str(ROOT / "jobs" / "configs" / "demo.yaml")
    results: dict = {}
    sizes = [int(x) for x in args.entities.split(",")]
    for n in sizes:
        home = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{n}-"))
        counts = generate(home / "data" / "demo", entities=n, seed=0)
        ours = run(MLPLATFORM.format(config=config), str(home), "local")
        base = run(PYARROW, str(home))
        r = results[str(n)] = {"records": counts, "mlplatform": ours, "pyarrow": base}
        print(
            f"{n:>9} entities ({sum(counts.values())} raw records): mlplatform {ours['seconds']:.1f}s "
            f"({ours['rows'] / ours['seconds']:.0f} rows/s, RSS {ours['rss_mb']:.0f} MB)  pyarrow {base['seconds']:.1f}s "
            f"({base['rows'] / base['seconds']:.0f} rows/s, RSS {base['rss_mb']:.0f} MB)  ratio "
            f"{base['seconds'] / ours['seconds']:.2f}× pyarrow's speed",
            flush=True,
        )
        if n == sizes[-1] and not args.skip_cluster:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            try:
                r["cluster"] = c = run(MLPLATFORM.format(config=config), str(home), cluster.address)
            finally:
                cluster.shutdown()
            print(
                f"  3-node cluster: {c['seconds']:.1f}s, fingerprint {'equal' if c['fingerprint'] == ours['fingerprint'] else 'DIFFERENT'}",
                flush=True,
            )
    print(f"written to {save('ingest', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
