"""JSON lines: one JSON object per line, fields taken by dotted path; one broken line is one bad record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mlplatform.data.contract import FILE, REASON, RECORD
from mlplatform.data.sources import Probe, SourceKind, lines_table, read_lines, register, utf8_problem


def _dig(obj: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def parse_json_lines(lines: pd.Series, fields: Mapping[str, Any]) -> pd.DataFrame:
    """Parse JSON lines and pull each field from its dotted path (`FieldSpec.path`); a broken line becomes a reason.

    Returns:
        One column per field, plus ``__reason`` and ``__record`` (the raw line) for the contract.
    """
    paths = {name: (spec.path or name).split(".") for name, spec in fields.items()}
    cols: dict[str, list[Any]] = {name: [] for name in fields}
    reasons: list[str] = []
    for line in lines.tolist():
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            reasons.append("")
        except ValueError as exc:
            obj = {}
            reasons.append(f"malformed JSON: {exc}")
        except RecursionError:
            obj = {}
            reasons.append("malformed JSON: nested too deeply")
        for name, path in paths.items():
            cols[name].append(_dig(obj, path))
    frame = pd.DataFrame({name: pd.Series(vals, dtype=object) for name, vals in cols.items()})
    frame[REASON] = reasons
    frame[RECORD] = lines.astype(str).to_numpy()
    return frame


@register
class JsonLinesKind(SourceKind):
    name = "jsonl"

    def probe(self, fs: Any, path: str, source: Any) -> Probe:
        return utf8_problem(fs, path)

    def read(self, source: Any, paths: list[str]) -> Any:
        # Line by line (on \n only), so that one broken line is quarantined instead of failing the whole file.
        return read_lines(paths)

    def read_file(self, fs: Any, path: str, source: Any) -> Any:
        return lines_table(fs, path)

    def records(self, batch: pd.DataFrame, source: Any) -> pd.DataFrame:
        raw = parse_json_lines(batch["text"], source.fields)
        raw[FILE] = batch["path"].astype(str).to_numpy()
        return raw
