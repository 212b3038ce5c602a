"""Dataset versions: written under a private name, committed in one step, so a reader only sees complete ones.

A version is a folder ``<output_dir>/<name>/<id>/`` whose ``manifest.json`` names every file of it (table,
quarantine, profile) with its size, and holds the row count and the content fingerprint. The id is a digest
of the spec and of the inputs' *contents* (sha256), so a changed file is always a new version and an
unchanged one is reused.

How a version becomes visible (as Delta Lake and Iceberg commit a table version):

- **Local filesystem**: everything, manifest last, is written to ``.<id>.tmp-<host>-<pid>-<uuid>/`` beside the
  versions, then published with one ``rename`` to ``<id>/``, which is atomic. Of two writers of the same id,
  the second finds the version committed ("same version exists"), discards its copy and reuses the
  committed one: the version is produced once, never appended to. A folder ``<id>/`` without a manifest
  (what an interrupted writer of an older mlplatform left) is not a version: it is replaced.
- **Object stores** (s3://, gs://, ...), which have no rename: each writer writes its files under
  ``<id>/<uuid>/`` and the manifest ``<id>/manifest.json`` is the commit; readers read only the files it
  names, so a writer's files are invisible until then. Two writers racing on the same id may both write a
  manifest (the store has no put-if-absent here): each is complete and names only its own files, so a
  reader still sees one whole version. The loser removes its files when it sees the other manifest.
- **Leftovers**: a temporary folder whose writer is gone (same host, process not alive) or that is older than
  a day is removed by the next writer of that dataset.

`load_version` checks what is cheap on every load — each listed file is there with its size, and the
Parquet footers add up to the manifest's row count — and recomputes the fingerprint when asked (`verify`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform.errors import DataContractError

__all__ = [
    "MANIFEST",
    "DatasetVersion",
    "VersionWriter",
    "filesystem",
    "load_version",
    "find_version",
    "content_digests",
    "table_hash",
    "fingerprint",
]

MANIFEST = "manifest.json"
#: A temporary folder older than this is abandoned whoever wrote it (a writer on another host).
STALE_AFTER_S = 24 * 3600
_TMP = ".tmp-"


def hidden(relative: str) -> bool:
    """A path below a data folder's root that is not data: a hidden or temporary file or folder anywhere in it
    (``.ipynb_checkpoints/``, ``_temporary/``, ``.part-0.crc``, ``_SUCCESS``), as Spark and Hive treat them."""
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI (file://, s3://, gs://, ...)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def _read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode("utf-8"))


def _write_json(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(obj, indent=1).encode("utf-8"))


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


# ------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DatasetVersion:
    """A committed dataset version, as its manifest describes it."""

    path: str
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def label(self) -> str:
        return self.manifest["label"]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    def _full(self, relative: str) -> str:
        return f"{self.path.rstrip('/')}/{relative}"

    @property
    def table_files(self) -> list[str]:
        """Every file of the training table, as the manifest lists them (read these, not a folder)."""
        return [self._full(f["path"]) for f in self.manifest["files"]["table"]]

    @property
    def table_path(self) -> str:
        """The folder holding exactly the table's files."""
        return self._full(self.manifest["files"]["table_dir"])

    @property
    def quarantine_path(self) -> str:
        return self._full(self.manifest["files"]["quarantine_dir"])

    @property
    def profile_path(self) -> str:
        return self._full(self.manifest["files"]["profile"])

    def profile(self) -> dict[str, Any]:
        """The version's profile (`mlplatform.data.profile`): per feature its kind, nulls, categories, histogram.

        Raises:
            OSError, ValueError: the profile cannot be read.
        """
        fs, path = filesystem(self.profile_path)
        return _read_json(fs, path)

    @property
    def reused(self) -> bool:
        return bool(self.manifest.get("reused"))


def load_version(path: str, *, verify: bool = False) -> DatasetVersion:
    """Open a committed dataset version and check it against its manifest.

    Args:
        path: the version folder (local or a URI).
        verify: also recompute the content fingerprint (reads the whole table).

    Raises:
        DataContractError: no committed version there, or the table does not match its manifest (a file
            missing or of another size, another row count, another fingerprint).
    """
    fs, root = filesystem(path)
    try:
        manifest = _read_json(fs, f"{root}/{MANIFEST}")
    except FileNotFoundError:
        raise DataContractError(f"no dataset version at {path} (no {MANIFEST}); run the ingest job") from None
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}/{MANIFEST} cannot be read: {exc}") from None
    version = DatasetVersion(path.rstrip("/"), manifest)
    problem = _check(fs, root, manifest, verify=verify)
    if problem:
        raise DataContractError(f"dataset version at {path} does not match its manifest: {problem}")
    return version


def _check(fs: pafs.FileSystem, root: str, manifest: dict[str, Any], *, verify: bool) -> str:
    """What is wrong with a version's files against its manifest ("" when nothing is)."""
    try:
        listed = manifest["files"]["table"]
        rows = int(manifest["rows"])
    except (KeyError, TypeError, ValueError):
        return "the manifest has no file list or row count (written by an older mlplatform? re-run the ingest)"
    paths = [f"{root}/{f['path']}" for f in listed]
    for f, info in zip(listed, fs.get_file_info(paths), strict=True):
        if info.type != pafs.FileType.File:
            return f"table file {f['path']} is missing"
        if info.size != f["size"]:
            return f"table file {f['path']} has {info.size} bytes, the manifest says {f['size']}"
    found = 0
    for path in paths:
        with fs.open_input_file(path) as handle:
            found += pq.ParquetFile(handle).metadata.num_rows
    if found != rows:
        return f"the table has {found} rows, the manifest says {rows}"
    if verify:
        actual = fingerprint(table_hash(fs, paths), manifest["schema"], rows)
        if actual != manifest["fingerprint"]:
            return f"the table's fingerprint is {actual[:16]}, the manifest says {manifest['fingerprint'][:16]}"
    return ""


def find_version(dataset_dir: str, version_id: str) -> DatasetVersion | None:
    """The committed version `version_id` under `dataset_dir`, or None when there is none (or it is damaged,
    which a writer then replaces)."""
    try:
        return load_version(f"{dataset_dir.rstrip('/')}/{version_id}")
    except DataContractError:
        return None


# ---------------------------------------------------------------------------------------- fingerprint


def hash_frame(batch: pd.DataFrame) -> int:
    """Sum mod 2**64 of the rows' hashes: independent of row order and of how rows are split into blocks."""
    hashes = pd.util.hash_pandas_object(batch[sorted(batch.columns)], index=False).to_numpy(dtype=np.uint64)
    return int(hashes.sum(dtype=np.uint64))


def table_hash(fs: pafs.FileSystem, paths: list[str]) -> int:
    """`hash_frame` over every row of Parquet files, file by file (bounded memory)."""
    total = 0
    for path in paths:
        with fs.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=200_000):
                total = (total + hash_frame(batch.to_pandas())) % (1 << 64)
    return total


def fingerprint(total_hash: int, schema: str, rows: int) -> str:
    """The content fingerprint of a table: its schema, row count and order-free row hash."""
    return hashlib.sha256(f"{schema}|{rows}|{total_hash}".encode()).hexdigest()


# ----------------------------------------------------------------------------------------- versioning


def _sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_digests(paths: list[str]) -> dict[str, str]:
    """sha256 of every file's content, read in parallel threads (hashlib releases the GIL on large chunks).

    Size and modification time are not enough: a file rewritten with the same size and time is new data.
    """

    def one(path: str) -> str:
        fs, inner = filesystem(path)
        return _sha256(fs, inner)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(paths)))) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VersionWriter:
    """Writes one dataset version where no reader looks, then commits it (see the module docstring).

    Args:
        dataset_dir: ``<output_dir>/<name>``, local or a URI.
        version_id: the version's id.
    """

    def __init__(self, dataset_dir: str, version_id: str) -> None:
        self.dataset_dir = dataset_dir.rstrip("/")
        self.version_id = version_id
        self.fs, self.root = filesystem(self.dataset_dir)
        self.local = _is_local(self.fs)
        token = uuid.uuid4().hex[:12]
        if self.local:
            name = f".{version_id}{_TMP}{socket.gethostname()}-{os.getpid()}-{token}"
            self.work, self.prefix = f"{self.root}/{name}", ""
        else:
            self.work, self.prefix = f"{self.root}/{version_id}/{token}", f"{token}/"
        self.final = f"{self.root}/{version_id}"

    def begin(self) -> None:
        """Remove abandoned temporary folders of this dataset, then create ours."""
        self._remove_abandoned()
        self.fs.create_dir(self.work, recursive=True)

    def path(self, name: str) -> str:
        """Where to write `name` (a folder for Ray Data's writers, or a file), in the writer's filesystem."""
        return f"{self.work}/{name}"

    def files(self, folder: str) -> list[dict[str, Any]]:
        """The files written under `folder`: path relative to the version and size, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(folder), recursive=True, allow_not_found=True))
        out = [
            {"path": f"{self.prefix}{folder}/{os.path.relpath(i.path, self.path(folder))}", "size": i.size}
            for i in infos
            if i.type == pafs.FileType.File
        ]
        return sorted(out, key=lambda f: f["path"])

    def write_json(self, name: str, obj: Any) -> str:
        _write_json(self.fs, self.path(name), obj)
        return f"{self.prefix}{name}"

    def commit(self, manifest: dict[str, Any]) -> DatasetVersion:
        """Write the manifest and publish the version; if another writer committed this id first, keep theirs.

        Returns:
            The committed version (``reused`` set when it is another writer's).
        """
        if self.local:
            _write_json(self.fs, self.path(MANIFEST), manifest)
            return self._publish_local(manifest)
        existing = find_version(self.dataset_dir, self.version_id)
        if existing is not None:
            self.abort()
            return DatasetVersion(existing.path, {**existing.manifest, "reused": True})
        _write_json(self.fs, f"{self.final}/{MANIFEST}", manifest)
        committed = load_version(self.dataset_dir + f"/{self.version_id}")
        if committed.manifest.get("writer") != manifest.get("writer"):
            self.abort()  # another writer's manifest landed after ours: its files are the version
            return DatasetVersion(committed.path, {**committed.manifest, "reused": True})
        return committed

    def _publish_local(self, manifest: dict[str, Any]) -> DatasetVersion:
        for _ in range(3):
            try:
                os.rename(self.work, self.final)
                return DatasetVersion(self.dataset_dir + f"/{self.version_id}", manifest)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            existing = find_version(self.dataset_dir, self.version_id)
            if existing is not None:
                self.abort()
                return DatasetVersion(existing.path, {**existing.manifest, "reused": True})
            # A folder without a (valid) manifest is not a version: an older writer was interrupted there,
            # or its manifest was deleted or edited by hand. Set it aside atomically, then replace it.
            aside = f"{self.root}/.{self.version_id}.damaged-{uuid.uuid4().hex[:12]}"
            try:
                os.rename(self.final, aside)
            except FileNotFoundError:
                continue
            self.fs.delete_dir(aside)
        raise DataContractError(f"could not publish dataset version {self.final}: it keeps changing under us")

    def abort(self) -> None:
        """Remove everything this writer wrote (its version was never published)."""
        if _exists(self.fs, self.work):
            self.fs.delete_dir(self.work)

    def _remove_abandoned(self) -> None:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            return
        now = time.time()
        host = socket.gethostname()
        for info in infos:
            name = info.base_name
            if info.type != pafs.FileType.Directory or not name.startswith(".") or _TMP not in name:
                if info.type == pafs.FileType.Directory and name.startswith(".") and ".damaged-" in name:
                    self.fs.delete_dir(info.path)  # a replaced version someone was setting aside
                continue
            owner = name.split(_TMP, 1)[1].rsplit("-", 1)[0]  # <host>-<pid>
            owner_host, _, pid = owner.rpartition("-")
            gone = owner_host == host and pid.isdigit() and not _alive(int(pid))
            old = info.mtime is not None and now - info.mtime.timestamp() > STALE_AFTER_S
            if gone or old:
                self.fs.delete_dir(info.path)
