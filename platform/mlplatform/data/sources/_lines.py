"""Reading files as lines split on ``\\n`` only, streamed in chunks (for JSON lines and text per line).

Ray's ``read_text`` splits with Python's ``str.splitlines``, which also breaks at U+2028, U+0085, form feeds
and other characters that are legal inside a JSON string, cutting one record into two broken ones; it also
reads each file whole. JSON lines (and most line-oriented text) are defined by ``\\n`` alone: a ``\\r`` before
it is dropped, everything else stays in the line.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

__all__ = ["LinesDatasource", "split_lines"]

#: Bytes read at a time; a block holds the whole lines of about this much text.
CHUNK_BYTES = 32 << 20


def split_lines(data: bytes) -> pa.Array:
    """The lines of UTF-8 `data` as an Arrow string array, split on ``\\n`` only; a final ``\\n`` does not start an
    empty line; one ``\\r`` before a ``\\n`` is dropped. In Arrow (a Python split and decode per line took 2.6 s for
    2.2 M lines, this 0.3 s)."""
    import pyarrow.compute as pc

    if not data:
        return pa.array([], pa.string())
    offsets = pa.py_buffer(struct.pack("<qq", 0, len(data)))
    text = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])  # no copy
    lines = pc.list_flatten(pc.split_pattern(text.cast(pa.large_string()), "\n"))  # the cast checks UTF-8
    if data.endswith(b"\n"):
        lines = lines.slice(0, len(lines) - 1)
    if b"\r\n" in data or data.endswith(b"\r"):
        lines = pc.replace_substring_regex(lines, pattern="\r$", replacement="")
    return lines.cast(pa.string()) if len(data) < 2**31 else lines


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
            yield pa.table({"text": split_lines(data[: cut + 1])})
        if rest:
            yield pa.table({"text": split_lines(rest)})
