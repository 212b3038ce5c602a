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
from typing import TYPE_CHECKING, Any, ClassVar

from mlplatform.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from mlplatform.data.config import SourceSpec

__all__ = ["SourceKind", "register", "get", "names", "utf8_problem"]

_KINDS: dict[str, SourceKind] = {}
_discovered = False


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

    def probe(self, fs: Any, path: str) -> tuple[str, list[dict[str, str]]]:
        """Why a non-empty file cannot be read ("" when it can), and the parts of it to quarantine one by one.

        Args:
            fs: the pyarrow filesystem holding the file.
            path: the file's path in `fs`.

        Returns:
            (reason, bad parts): each bad part is ``{"reason": ..., "record": ...}`` (e.g. a CSV row with the
            wrong number of columns, which the reader then skips).
        """
        return "", []

    def read(self, source: SourceSpec, paths: list[str]) -> Any:
        """A Ray Dataset of the files' raw content, with each row's file in a ``path`` column."""
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


def utf8_problem(fs: Any, path: str) -> str:
    """Why a file is not UTF-8 text ("" when it is), naming the byte offset; streams, so any size works."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    return f"not UTF-8 text: {exc.reason} at byte {offset + exc.start}"
                offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text: {exc.reason} at byte {offset + exc.start}"
    return ""
