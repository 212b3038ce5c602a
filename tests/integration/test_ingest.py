"""Ingest on real Ray: malformed files and duplicates quarantined with reasons, reconciliation, profile,
and a fingerprint that does not depend on the number of workers, blocks or nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import ray
from mlplatform.config import load_config
from mlplatform.data.config import DataConfig
from mlplatform.data.ingest import ingest
from mlplatform.pipeline import PipelineConfig
from mlplatform.tools.sample_data import generate

from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.integration


def spec(home: Path, **source_paths) -> DataConfig:
    cfg = load_config(DEMO_CONFIG, PipelineConfig).data
    sources = [s.model_copy(update={"path": source_paths.get(s.name, s.path)}) for s in cfg.sources]
    return cfg.model_copy(update={"sources": sources, "output_dir": str(home / "datasets")})


@pytest.fixture(scope="module")
def data(tmp_path_factory, monkeypatch_module):
    home = tmp_path_factory.mktemp("ingest")
    monkeypatch_module.setenv("MLPLATFORM_HOME", str(home))
    generate(home / "data" / "demo", entities=1500, seed=3)
    return home


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture
def local_ray():
    # address="local": a Ray of its own, even while the session's platform (another Ray) is up.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_bad_files_and_duplicate_keys_are_quarantined_and_reconciled(data, local_ray):
    demo = data / "data" / "demo"
    tx = data / "tx"
    tx.mkdir(exist_ok=True)
    shutil.copy(demo / "transactions.parquet", tx / "part-0.parquet")
    (tx / "part-1.parquet").write_bytes((demo / "transactions.parquet").read_bytes()[:2000])  # truncated
    (tx / "part-2.parquet").write_bytes(b"")  # empty
    (tx / "_SUCCESS").write_bytes(b"")  # a marker, not data
    readings = data / "readings"
    readings.mkdir(exist_ok=True)
    shutil.copy(demo / "readings.csv", readings / "a.csv")
    (readings / "b.csv").write_bytes("entity_id,day,usage\n7,1,caf\xe9\n".encode("latin-1"))  # not UTF-8
    (readings / "c.csv").write_text("entity_id,day,usage\n7,1\n7,2,3.0,9\n8,3,4.5\n")  # 2 broken rows, 1 good
    profiles = data / "profiles.csv"
    profiles.write_text((demo / "profiles.csv").read_text() + '"5","33","pro","2.0","1"\n')  # key 5 twice

    version = ingest(spec(data, transactions=str(tx), readings=str(readings), profiles=str(profiles)))
    m = version.manifest
    for source, s in m["sources"].items():
        assert s["in"] == s["ok"] + s["quarantined"], (source, s)  # nothing silently lost
    assert m["sources"]["transactions"]["bad_files"] == 2 and len(m["sources"]["transactions"]["files"]) == 3
    assert m["sources"]["readings"]["bad_files"] == 1

    q = pd.read_parquet(Path(version.path) / "quarantine")
    reasons = dict(zip(q["file"].str.rsplit("/", n=1).str[-1] + ":" + q["reason"], q["source"], strict=True))
    assert any(r.startswith("part-1.parquet:malformed file: unreadable parquet") for r in reasons)
    assert "part-2.parquet:malformed file: empty file" in reasons
    assert any(r.startswith("b.csv:malformed file: not UTF-8 text") for r in reasons)
    broken = q[q["file"].str.endswith("c.csv")]
    assert sorted(broken["reason"]) == [
        "malformed CSV row: expected 3 columns, got 2",
        "malformed CSV row: expected 3 columns, got 4",
    ]
    assert sorted(broken["record"]) == ["7,1", "7,2,3.0,9"]
    dup = q[q["reason"].str.startswith("entity_id: duplicate value 5 (2 records)")]
    assert len(dup) == 2 and dup["record"].str.contains('"entity_id": 5').all()
    table = pd.read_parquet(version.table_path)
    assert 5 not in set(table["entity_id"])  # an ambiguous label is not trained on

    # Text and images (planted by the generator: a latin-1 ticket file, a ticket file named for nobody, a
    # truncated PNG) are quarantined with their reasons; the rest become per-customer features.
    tickets, scans = q[q["source"] == "tickets"], q[q["source"] == "scans"]
    assert m["sources"]["tickets"]["bad_files"] == 1 and tickets["reason"].str.contains("not UTF-8 text").sum() == 1
    assert (tickets["file"].str.endswith("unassigned.txt") & (tickets["reason"] == "entity_id: missing")).sum() == 1
    assert (scans["reason"].str.startswith("malformed file: unreadable image")).sum() == 1
    assert 0 < table["n_tickets"].sum() <= m["sources"]["tickets"]["ok"]
    assert 0 < table["n_scans"].sum() <= m["sources"]["scans"]["ok"]
    scanned = table[table["n_scans"] > 0]
    assert (
        scanned["mean_scan_brightness"].between(0, 1).all()
        and table.loc[table["n_scans"] == 0, "mean_scan_brightness"].isna().all()
    )
    assert table["recent_usage_trend"].notna().mean() > 0.9 and (table["last_usage"] > 0).mean() > 0.9

    profile = json.loads(Path(version.profile_path).read_text())
    assert profile["rows"] == len(table) and 0 < profile["label_rate"] < 1
    age = profile["features"]["age"]
    assert age["kind"] == "numeric" and sum(age["histogram"]["counts"]) == age["count"]
    assert age["min"] <= age["quantiles"]["0.5"] <= age["max"]
    plan = profile["features"]["plan"]
    assert plan["kind"] == "categorical" and abs(sum(plan["categories"].values()) - 1) < 1e-9


def test_a_pattern_in_the_spec_quarantines_what_it_does_not_match(data, local_ray):
    cfg = spec(data)
    events = next(s for s in cfg.sources if s.name == "events")
    fields = {
        **events.fields,
        "event_type": events.fields["event_type"].model_copy(
            update={"allowed": None, "pattern": "login|view|purchase"}
        ),
    }  # 'support' no longer matches
    sources = [
        s.model_copy(update={"fields": fields, "max_bad_fraction": 1.0}) if s is events else s for s in cfg.sources
    ]
    version = ingest(cfg.model_copy(update={"sources": sources, "name": "patterned"}))
    q = pd.read_parquet(Path(version.path) / "quarantine")
    assert q["reason"].str.contains("does not match pattern 'login|view|purchase'").sum() > 0
    assert version.manifest["sources"]["events"]["quarantined"] > 100


def ingest_with(
    data: Path, init: dict, block_bytes: int | None = None, name: str = "fp", small: bool = True
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Ingest on a fresh Ray: (fingerprint, table, quarantine), sorted. `small=True` runs the plan in this
    process; `small=False` takes the large-input path (Ray Data tasks, hash shuffle)."""
    from mlplatform.data import ingest as ingest_module
    from ray.data import DataContext

    decide = ingest_module.ingest_in_process
    ingest_module.ingest_in_process = lambda size: small
    ray.init(**{"address": "local", **init}, include_dashboard=False, logging_level="ERROR")
    try:
        if block_bytes:
            DataContext.get_current().target_max_block_size = block_bytes
        out = data / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        version = ingest(spec(data).model_copy(update={"output_dir": str(out)}))
        table = pd.read_parquet(version.table_path).sort_values("entity_id", ignore_index=True)
        quarantine = pd.read_parquet(version.quarantine_path)
        return version.fingerprint, table, quarantine.sort_values(list(quarantine.columns), ignore_index=True)
    finally:
        DataContext.get_current().target_max_block_size = DataContext().target_max_block_size
        ingest_module.ingest_in_process = decide
        ray.shutdown()


def test_fingerprint_does_not_depend_on_workers_blocks_or_nodes(data):
    from ray.cluster_utils import Cluster

    runs = {
        "in-process (small input)": ingest_with(data, {"num_cpus": 1}, name="one"),
        "2 CPUs, 64 KiB blocks, shuffle": ingest_with(
            data, {"num_cpus": 2}, block_bytes=64 * 1024, name="two", small=False
        ),
    }
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        runs["3 nodes, shuffle"] = ingest_with(data, {"address": cluster.address}, name="three", small=False)
    finally:
        cluster.shutdown()
    (_, first, first_quarantine), *others = runs.values()
    for where, (_, table, quarantine) in runs.items():
        assert table["entity_id"].is_unique, where  # a key split across blocks would show up here
        # Bit for bit, floats included: sums do not depend on the order rows arrive in.
        pd.testing.assert_frame_equal(table, first, check_exact=True, obj=where)
        # The same records refused, with the same reasons and raw forms, on either path.
        pd.testing.assert_frame_equal(quarantine, first_quarantine, obj=f"quarantine, {where}")
    assert len({fp for fp, *_ in runs.values()}) == 1, {where: fp for where, (fp, *_) in runs.items()}
