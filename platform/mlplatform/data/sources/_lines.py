"""Reading files as lines split on ``\\n`` only, streamed in chunks (for JSON lines and text per line).

Ray's ``read_text`` splits with Python's ``str.splitlines``, which also breaks at U+2028, U+0085, form feeds
and other characters that are legal inside a JSON string, cutting one record into two broken ones; it also
reads each file whole. JSON lines (and most line-oriented text) are defined by ``\\n`` alone: a ``\\r`` before
it is dropped, everything else stays in the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

__all__ = ["LinesDatasource", "split_lines"]

#: Bytes read at a time; a block holds the whole lines of about this much text.
CHUNK_BYTES = 32 << 20


def split_lines(data: bytes) -> list[str]:
    """The lines of UTF-8 `data`, split on ``\\n`` only; a final ``\\n`` does not start an empty line."""
    if not data:
        return []
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return [(p[:-1] if p.endswith(b"\r") else p).decode("utf-8") for p in parts]


class LinesDatasource(FileBasedDatasource):
    """One row per line (column ``text``), streamed chunk by chunk so a big file never sits in memory whole."""

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        rest = b""
        while chunk := f.read(CHUNK_BYTES):
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield pa.table({"text": pa.array(split_lines(data[: cut + 1]), pa.string())})
        if rest:
            yield pa.table({"text": pa.array(split_lines(rest), pa.string())})
