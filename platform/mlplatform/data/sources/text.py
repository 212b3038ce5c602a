"""Text documents, one per file or one per line, read as per-document fields; whose it is comes from the path."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlplatform.data.sources import Probe, SourceKind, binary_table, lines_table, read_lines, register, utf8_problem

#: What a model can use of a document without a language model: its length in characters, tokens and lines.
TEXT_FIELDS = ("chars", "tokens", "lines")


def text_fields(docs: pd.Series) -> pd.DataFrame:
    """Length in characters, whitespace tokens and lines of each document."""
    docs = docs.astype("string")  # also gives an empty batch the .str accessor
    return pd.DataFrame(
        {
            "chars": docs.str.len(),
            "tokens": docs.str.count(r"\S+"),
            "lines": docs.str.count("\n") + (~docs.str.endswith("\n")).astype(int),
        },
        index=docs.index,
    )


@register
class TextKind(SourceKind):
    name = "text"
    file_fields = TEXT_FIELDS

    def probe(self, fs: Any, path: str, source: Any) -> Probe:
        return utf8_problem(fs, path)

    def read(self, source: Any, paths: list[str]) -> Any:
        import ray.data

        if source.text_unit == "line":
            return read_lines(paths)
        return ray.data.read_binary_files(paths, include_paths=True)

    def read_file(self, fs: Any, path: str, source: Any) -> Any:
        if source.text_unit == "line":
            return lines_table(fs, path)
        return binary_table(fs, path)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        # Per-file documents arrive as bytes; the probe checked they are UTF-8.
        docs = batch["text"] if "text" in batch else batch["bytes"].map(lambda b: b.decode("utf-8"))
        return text_fields(docs)
