"""Dataset versions: commit once, never half, never doubled; checked against the manifest on load (no Ray).

Each test builds the on-disk state a writer leaves when it is killed at some step, or two writers race, then
checks what the next writer and a reader do about it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlplatform.data.version import (
    MANIFEST,
    VersionWriter,
    content_digests,
    filesystem,
    find_version,
    fingerprint,
    load_version,
    table_hash,
)
from mlplatform.errors import DataContractError


def write_version(dataset_dir, version_id="v1", rows=10, offset=0) -> VersionWriter:
    """A writer with a table and quarantine written and its manifest ready, not yet committed."""
    w = VersionWriter(str(dataset_dir), version_id)
    w.begin()
    os.makedirs(w.path("table"))
    os.makedirs(w.path("quarantine"))
    pq.write_table(
        pa.table({"id": list(range(offset, offset + rows)), "y": [0, 1] * (rows // 2)}), w.path("table/p0.parquet")
    )
    profile = w.write_json("profile.json", {"rows": rows})
    fs, _ = filesystem(str(dataset_dir))
    w.manifest = {
        "version": version_id,
        "rows": rows,
        "schema": "id,y",
        "fingerprint": fingerprint(table_hash(fs, [w.path("table/p0.parquet")]), "id,y", rows),
        "files": {
            "table_dir": "table",
            "table": w.files("table"),
            "quarantine_dir": "quarantine",
            "quarantine": [],
            "profile": profile,
        },
        "writer": w.work.rsplit("/", 1)[-1],
    }
    return w


def hidden(dataset_dir):
    return sorted(p.name for p in dataset_dir.iterdir() if p.name.startswith("."))


def test_a_committed_version_is_complete_and_checked(tmp_path):
    w = write_version(tmp_path)
    version = w.commit(w.manifest)
    assert not version.reused and version.rows == 10
    assert load_version(version.path, verify=True).fingerprint == version.fingerprint
    assert [os.path.basename(f) for f in version.table_files] == ["p0.parquet"]
    assert hidden(tmp_path) == []  # the temporary folder became the version


def test_two_writers_of_one_version_commit_it_once(tmp_path):
    first, second = write_version(tmp_path), write_version(tmp_path, offset=100)
    a = first.commit(first.manifest)
    b = second.commit(second.manifest)  # lost the race: keeps the committed version, discards its own copy
    assert not a.reused and b.reused and b.fingerprint == a.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"] and hidden(tmp_path) == []
    assert pq.read_table(b.table_files).column("id").to_pylist() == list(range(10))  # not doubled, not mixed


def test_a_writer_killed_before_commit_leaves_nothing_a_reader_sees_and_is_cleaned_up(tmp_path):
    dead = write_version(tmp_path)
    assert find_version(str(tmp_path), "v1") is None  # written but not committed: no version
    # Its process is gone: rename its folder as if a process that no longer exists had written it.
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = dead.work.rsplit("-", 2)[0] + f"-{int(pid.stdout)}-deadbeef0000"
    os.rename(dead.work, stale)
    w = write_version(tmp_path)  # begin() removes what dead writers left
    assert os.path.basename(stale) not in hidden(tmp_path)
    assert not w.commit(w.manifest).reused


def test_a_version_folder_without_manifest_is_replaced_not_appended_to(tmp_path):
    # What an interrupted ingest of an older mlplatform left: the table written, the manifest not.
    (tmp_path / "v1" / "table").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2, 3], "y": [0, 1, 0]}), tmp_path / "v1" / "table" / "old.parquet")
    w = write_version(tmp_path)
    version = w.commit(w.manifest)
    assert not version.reused
    assert sorted(os.listdir(tmp_path / "v1" / "table")) == ["p0.parquet"]
    assert len(pq.read_table(version.table_files)) == 10


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda m: m.update(rows=20), "the table has 10 rows, the manifest says 20"),
        (lambda m: m["files"]["table"][0].update(size=1), "has "),
        (lambda m: m["files"]["table"].append({"path": "table/p1.parquet", "size": 5}), "table/p1.parquet is missing"),
        (lambda m: m.pop("files"), "no file list"),
    ],
)
def test_a_manifest_edited_by_hand_is_caught_on_load_and_the_version_rewritten(tmp_path, edit, needle):
    w = write_version(tmp_path)
    version = w.commit(w.manifest)
    manifest = json.loads((tmp_path / "v1" / MANIFEST).read_text())
    edit(manifest)
    (tmp_path / "v1" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataContractError, match="does not match its manifest|cannot be read|no file list"):
        load_version(version.path)
    with pytest.raises(DataContractError) as e:
        load_version(version.path)
    assert needle in str(e.value)
    again = write_version(tmp_path)
    assert not again.commit(again.manifest).reused  # a damaged version is replaced by a good one
    assert load_version(version.path).rows == 10


def test_a_deleted_manifest_means_no_version(tmp_path):
    w = write_version(tmp_path)
    version = w.commit(w.manifest)
    (tmp_path / "v1" / MANIFEST).unlink()
    with pytest.raises(DataContractError, match="no dataset version"):
        load_version(version.path)
    assert find_version(str(tmp_path), "v1") is None


def test_verify_recomputes_the_fingerprint(tmp_path):
    w = write_version(tmp_path)
    version = w.commit(w.manifest)
    manifest = json.loads((tmp_path / "v1" / MANIFEST).read_text())
    manifest["fingerprint"] = "0" * 64
    (tmp_path / "v1" / MANIFEST).write_text(json.dumps(manifest))
    assert load_version(version.path).rows == 10  # the cheap check does not read the rows
    with pytest.raises(DataContractError, match="fingerprint"):
        load_version(version.path, verify=True)


def test_content_digests_see_a_file_rewritten_with_the_same_size_and_time(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("id,x\n1,2\n")
    stat = f.stat()
    before = content_digests([str(f)])
    f.write_text("id,x\n1,3\n")
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert f.stat().st_size == stat.st_size and f.stat().st_mtime_ns == stat.st_mtime_ns
    assert content_digests([str(f)]) != before
