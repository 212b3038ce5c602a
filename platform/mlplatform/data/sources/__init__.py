"""Source kinds: how each file format becomes raw records for the data contract.

One module per kind in this package, each a `SourceKind` subclass decorated with ``@register``; the package
finds its modules itself, so a new format is one new file here and nothing else (the dataset spec asks
the registry which formats exist and lets each kind check the parts of a source only it understands).

Ingest drives every kind the same way: ``probe`` each file in parallel (a file that cannot be read is
quarantined with its reason instead of failing its source), ``read`` the readable files with Ray Data,
then ``records`` turns each batch into one column per raw field for `mlplatform.data.contract`.

Kind modules import Ray Data inside ``read``: the registry is loaded whenever a dataset spec is validated,
including by the CLI before it submits a job, and ``import ray.data`` costs ≈ 1 s there (measured).
"""

from __future__ import annotations

import codecs
import importlib
import pkgutil
import re
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from mlplatform.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlplatform.data.config import SourceSpec

__all__ = [
    "SourceKind",
    "Probe",
    "register",
    "get",
    "names",
    "column_problem",
    "utf8_problem",
    "read_lines",
    "lines_table",
    "binary_table",
]

_KINDS: dict[str, SourceKind] = {}
_discovered = False


class Probe(NamedTuple):
    """What a look at one file found before reading it.

    Attributes:
        reason: why the file cannot be read ("" when it can): it is then quarantined as a file.
        bad_parts: parts of a readable file to quarantine one by one (``{"reason", "record"}``), which the
            reader skips (e.g. CSV rows with the wrong number of columns).
        rows: how many records an unreadable file holds, when that can be known (a Parquet footer, the lines
            of a text file); they count as quarantined records.
    """

    reason: str = ""
    bad_parts: list[dict[str, str]] = []
    rows: int | None = None


class SourceKind:
    """How one file format is read. Subclass it in a module of this package and decorate with ``@register``.

    Attributes:
        name: the `format` value of a source spec that selects this kind.
        file_fields: fields this kind measures on each file whatever it holds (text: chars, tokens, lines),
            or None when records carry their own fields and the contract names them. Kinds with file
            fields learn whose each file is from the spec's ``path_fields``.
    """

    name: ClassVar[str]
    file_fields: ClassVar[tuple[str, ...] | None] = None

    def check_spec(self, source: SourceSpec) -> None:
        """Refuse a source spec this kind cannot read; raise ValueError naming the field (pydantic adds where)."""
        if self.file_fields is None:
            if source.path_fields:
                raise ValueError(f"path_fields applies to sources with per-file fields, not to {self.name!r}")
            return
        if not source.path_fields:
            raise ValueError(f"a {self.name} source needs `path_fields` to say whose each file is")
        try:
            groups = set(re.compile(source.path_fields).groupindex)
        except re.error as exc:
            raise ValueError(f"path_fields {source.path_fields!r} is not a valid regular expression: {exc}") from None
        known = groups | set(self.file_fields)
        unknown = sorted(set(source.fields) - known)
        if unknown:
            raise ValueError(
                f"fields {unknown} are neither read from a {self.name} file nor named groups of path_fields; "
                f"available: {sorted(known)}"
            )

    def probe(self, fs: Any, path: str, source: SourceSpec) -> Probe:
        """Whether a non-empty file can be read, and what to quarantine of it (see `Probe`).

        Args:
            fs: the pyarrow filesystem holding the file.
            path: the file's path in `fs`.
            source: the source spec (a kind with a header or a schema checks its columns against the fields).
        """
        return Probe()

    def read(self, source: SourceSpec, paths: list[str]) -> Any:
        """A Ray Dataset of the files' raw content, with each row's file in a ``path`` column."""
        raise NotImplementedError

    def read_file(self, fs: Any, path: str, source: SourceSpec) -> pa.Table:
        """One file's raw content in this process, with the columns and types of `read`'s rows (less ``path``):
        the small-input path, where a Ray Data read costs more than the work (`mlplatform.data.local`)."""
        raise NotImplementedError

    def records(self, batch: pd.DataFrame, source: SourceSpec) -> pd.DataFrame:
        """One column per raw field of each record in a batch of `read`'s rows (plus the contract's
        ``__file``, and ``__reason``/``__record`` for records already known to be bad)."""
        raise NotImplementedError


def register(cls: type[SourceKind]) -> type[SourceKind]:
    """Class decorator: make a kind available under its `name` (one name, one kind)."""
    existing = _KINDS.get(cls.name)
    if existing is not None and type(existing) is not cls:
        raise RuntimeError(f"source kind {cls.name!r} is registered twice: {type(existing)} and {cls}")
    _KINDS[cls.name] = cls()
    return cls


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            if not module.name.startswith("_"):  # private helpers (e.g. _lines) are not kinds
                importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def names() -> list[str]:
    """Every registered format name, sorted."""
    _discover()
    return sorted(_KINDS)


def get(name: str) -> SourceKind:
    """The kind registered as `name`.

    Raises:
        ConfigError: no such kind; the message lists the ones there are.
    """
    _discover()
    if name not in _KINDS:
        raise ConfigError(f"unknown format {name!r}; the source kinds are {names()}")
    return _KINDS[name]


def column_problem(columns: list[str], source: SourceSpec, *, optional_may_miss: bool = True) -> str:
    """Why a file's columns cannot hold the source's fields ("" when they can): a column name twice (which one
    is the field is unknowable), or a field without a column (required ones only, with `optional_may_miss`)."""
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        return f"duplicate column name(s) {twice} in the file"
    missing = [
        name for name, spec in source.fields.items() if name not in columns and (spec.required or not optional_may_miss)
    ]
    if missing:
        return f"no column for field(s) {missing} (the file has {columns[:30]})"
    return ""


def utf8_problem(fs: Any, path: str) -> Probe:
    """Why a file is not UTF-8 text ("" when it is), naming the byte offset, with its number of lines (the
    records it holds, for line formats); streams, so any size works."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines, reason = 0, 0, ""
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            if not reason:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    reason = f"not UTF-8 text: {exc.reason} at byte {offset + exc.start}"
            offset += len(chunk)
            last = chunk
    if not reason:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text: {exc.reason} at byte {offset + exc.start}"
    if offset and not last.endswith(b"\n"):
        lines += 1
    return Probe(reason, [], lines if reason else None)


def lines_table(fs: Any, path: str) -> pa.Table:
    """A file's lines as `read_lines` gives them (column ``text``), read whole in this process."""
    import pyarrow as pa

    from mlplatform.data.sources._lines import split_lines

    with fs.open_input_stream(path) as f:
        return pa.table({"text": split_lines(f.read())})


def binary_table(fs: Any, path: str) -> pa.Table:
    """A file's bytes as Ray's ``read_binary_files`` gives them (one row, column ``bytes``)."""
    import pyarrow as pa

    with fs.open_input_stream(path) as f:
        return pa.table({"bytes": pa.array([f.read()], pa.binary())})


def read_lines(paths: list[str]) -> Any:
    """A Ray Dataset of the files' lines (column ``text``, and ``path``), split on ``\\n`` only."""
    import ray.data

    from mlplatform.data.sources._lines import LinesDatasource

    return ray.data.read_datasource(LinesDatasource(paths, include_paths=True))
