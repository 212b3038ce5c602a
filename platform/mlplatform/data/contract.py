"""The data contract: cast raw values to their declared types and say, per record, what is wrong.

Pure pandas on one batch, so Ray Data runs it in parallel with ``map_batches`` and unit tests run it
without Ray. A record is never dropped here: it comes out either typed, or with a reason and its raw form.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # the contract reads a FieldSpec's attributes; the spec depends on the source kinds, which use this
    from mlplatform.data.config import FieldSpec

__all__ = ["REASON", "RECORD", "FILE", "INT64_RANGE", "validate_batch"]

#: Column holding why a record was quarantined ("" when it passed).
REASON = "__reason"
#: Column holding the raw record as JSON, for quarantined records.
RECORD = "__record"
#: Column holding the file a record came from, when the reader knows it.
FILE = "__file"

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _mixed(raw: pd.Series) -> bool:
    """Whether a column may hold Python objects of any type (parsed JSON), not one typed array (CSV as text,
    Parquet). Only mixed columns need the per-value checks below; typed ones stay vectorized."""
    return raw.dtype == object


#: Text that means "no value" (after trimming whitespace, in any case).
_NULL_TEXT = ["", "nan", "null", "none"]


def _is_null(raw: pd.Series) -> np.ndarray:
    null = raw.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        return null
    if isinstance(raw.dtype, pd.ArrowDtype) and pa.types.is_string(raw.dtype.pyarrow_dtype):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(pa.array(raw.array)))  # Arrow text (CSV): no pandas copy
        return null | pc.fill_null(pc.is_in(text, value_set=pa.array(_NULL_TEXT)), False).to_numpy(zero_copy_only=False)
    if _mixed(raw):  # parsed JSON: only its strings can spell a missing value
        values = raw.to_numpy()
        texts = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
        if texts.any():
            null = null.copy()
            null[texts] |= pd.Series(values[texts], dtype=object).str.strip().str.lower().isin(_NULL_TEXT).to_numpy()
        return null
    as_str = raw.astype(str).str.strip()
    return null | as_str.str.lower().isin(_NULL_TEXT).to_numpy()


def _epoch_seconds(text: pd.Series) -> pd.Series:
    """ISO 8601 text → epoch seconds (float64, NaN where it is not a time); naive times are taken as UTC.

    Computed in microseconds, not pandas' default nanoseconds, whose range ends in 2262: a date in year 9999
    is a valid (if odd) value, not a reason to fail the batch.
    """
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    micros = parsed.dt.tz_convert(None).dt.as_unit("us").to_numpy(dtype="datetime64[us]").astype("int64")
    return pd.Series(np.where(parsed.isna().to_numpy(), np.nan, micros / 1e6), index=text.index, dtype="float64")


def _timestamps(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Epoch seconds (UTC) from ISO 8601 text or numbers; naive times are taken as UTC."""
    if _mixed(raw):
        numeric = raw.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).to_numpy(dtype=bool)
    else:
        numeric = np.full(
            len(raw), pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype)
        )
    out = pd.Series(np.nan, index=raw.index, dtype="float64")
    if numeric.any():
        out[numeric] = pd.to_numeric(raw[numeric], errors="coerce").astype("float64")
    text = ~numeric & raw.notna().to_numpy()
    if text.any():
        values = raw[text].astype(str)
        try:
            out[text] = _epoch_seconds(values)
        except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
            # A value pandas cannot place even in microseconds: parse one by one, so only it is refused.
            out[text] = [_one_epoch(v) for v in values]
    bad = out.isna().to_numpy() | ~np.isfinite(out.fillna(0).to_numpy())
    return out, bad


def _one_epoch(value: str) -> float:
    try:
        return float(_epoch_seconds(pd.Series([value])).iloc[0])
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return math.nan


#: Decimal integers that always fit in 64 bits (19 digits may not).
_SHORT_INT = r"[+-]?\d{1,18}"
#: The values a 64-bit signed integer holds (an id outside them is not an int of the contract).
INT64_RANGE = (-(2**63), 2**63 - 1)


def _exact_int(value: Any) -> int | None:
    """One value as an exact 64-bit integer, or None when it is not one (bool, fraction, out of range, text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        # A float is exact below 2**53 only: a bigger one may already be another id.
        if not math.isfinite(value) or not float(value).is_integer() or abs(value) > 2**53:
            return None
        number = int(value)
    else:
        text = str(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                return None
            return _exact_int(as_float)
    return number if INT64_RANGE[0] <= number <= INT64_RANGE[1] else None


def _integers(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Exact 64-bit integers: a float64 round trip would merge ids above 2**53 into each other."""
    n = len(raw)
    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.astype("Int64"), np.zeros(n, dtype=bool)
    if pd.api.types.is_bool_dtype(raw.dtype):
        return pd.Series(pd.NA, index=raw.index, dtype="Int64"), np.ones(n, dtype=bool)
    present = raw.notna().to_numpy()
    out = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    bad = np.zeros(n, dtype=bool)
    if not _mixed(raw) and not pd.api.types.is_float_dtype(raw.dtype):
        # Text (CSV): the common case vectorized; only odd spellings (1e3, 19 digits) go value by value.
        text = raw.astype("string").str.strip()
        short = text.str.fullmatch(_SHORT_INT).fillna(False).to_numpy(dtype=bool) & present
        out[short] = text[short].astype("Int64")
        rest = present & ~short
    else:
        rest = present
    if rest.any():
        exact = [_exact_int(v) for v in raw[rest]]
        out[rest] = pd.array(exact, dtype="Int64")
        bad[rest] = [v is None for v in exact]
    return out, bad


def _cast(raw: pd.Series, spec: FieldSpec) -> tuple[pd.Series, np.ndarray]:
    """Cast to the declared type; returns (typed values, mask of values that could not be cast)."""
    if spec.type == "timestamp":
        return _timestamps(raw)
    if spec.type == "int":
        return _integers(raw)
    if spec.type == "float":
        if pd.api.types.is_bool_dtype(raw.dtype):  # numpy's bool and Arrow's (a Parquet bool column)
            return pd.Series(np.nan, index=raw.index, dtype="float64"), np.ones(len(raw), dtype=bool)
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = num.isna().to_numpy() | ~np.isfinite(num.fillna(0).to_numpy())
        if _mixed(raw):  # a JSON boolean is not a number even though Python says so
            bad |= np.fromiter((type(v) is bool for v in raw.to_numpy()), dtype=bool, count=len(raw))
        return num, bad
    if spec.type == "bool":
        low = raw.map(lambda v: str(v).strip().lower())
        typed = low.map(lambda v: True if v in _TRUE else (False if v in _FALSE else None))
        return typed, typed.isna().to_numpy()
    if not _mixed(raw):
        return raw.astype("string"), np.zeros(len(raw), dtype=bool)
    typed = raw.map(lambda v: v if isinstance(v, str) else (None if v is None else str(v)))
    bad = raw.map(lambda v: isinstance(v, (dict, list))).to_numpy(dtype=bool)
    return typed, bad


def validate_batch(batch: pd.DataFrame, fields: Mapping[str, FieldSpec], now: float | None = None) -> pd.DataFrame:
    """Check every record of `batch` against `fields`.

    Args:
        batch: Raw records, one column per field (missing columns count as missing values). An existing
            ``__reason`` column (e.g. from JSON parsing) is kept and extended.
        fields: The contract.
        now: Ingest time in epoch seconds, for ``max_age_days`` (default: the current time).

    Returns:
        The typed field columns plus ``__reason`` ("" for good records) and ``__record`` (the raw record
        as JSON for bad ones, "" otherwise). Same number of rows as `batch`.
    """
    n = len(batch)
    if REASON in batch:  # str reasons from a parser ("" for none)
        given = batch[REASON].to_numpy(dtype=object)
        reasons = np.where(pd.isna(given), "", given).astype(object)
    else:
        reasons = np.full(n, "", dtype=object)
    # A record that could not even be parsed keeps that one reason instead of one per missing field.
    unparsed = reasons != ""
    out: dict[str, Any] = {}

    def flag(mask: np.ndarray, message: str, shown: pd.Series | None = None, after: str = "", how: Any = repr) -> None:
        """Add `message` + how(value of `shown`) + `after` to the reason of the masked records.

        Messages are formatted for the failing records only: on clean data the contract stays vectorized.
        """
        mask = mask & ~unparsed
        if not mask.any():
            return
        msg: Any = message
        if shown is not None:
            msg = np.array([f"{message}{how(v)}{after}" for v in shown[mask]], dtype=object)
        reasons[mask] = np.where(reasons[mask] == "", msg, reasons[mask] + "; " + msg)

    for name, spec in fields.items():
        raw = batch[name] if name in batch else pd.Series([None] * n, index=batch.index, dtype=object)
        null = _is_null(raw)
        typed, bad_type = _cast(raw.where(~null, None), spec)
        bad_type = bad_type & ~null
        if spec.required:
            flag(null, f"{name}: missing")
        flag(bad_type, f"{name}: expected {spec.type}, got ", raw)
        ok = ~null & ~bad_type
        if spec.min is not None:
            flag(ok & (typed.fillna(spec.min) < spec.min).to_numpy(), f"{name}: ", raw, f" < min {spec.min:g}", str)
        if spec.max is not None:
            flag(ok & (typed.fillna(spec.max) > spec.max).to_numpy(), f"{name}: ", raw, f" > max {spec.max:g}", str)
        if spec.pattern is not None:
            regex = re.compile(spec.pattern)
            mismatch = ok & ~typed.map(lambda v, r=regex: isinstance(v, str) and r.fullmatch(v) is not None).to_numpy(
                dtype=bool
            )
            flag(mismatch, f"{name}: ", raw, f" does not match pattern {spec.pattern!r}")
        if spec.max_age_days is not None:
            oldest = (time.time() if now is None else now) - spec.max_age_days * 86400
            stale = ok & (typed.fillna(oldest) < oldest).to_numpy()
            flag(stale, f"{name}: ", raw, f" is older than max_age_days {spec.max_age_days:g}", str)
        if spec.allowed is not None:
            outside = ok & ~typed.isin(list(spec.allowed)).fillna(False).to_numpy(dtype=bool)
            flag(outside, f"{name}: ", raw, f" not in allowed {sorted(map(str, spec.allowed))}")
        # Nullable dtypes keep every batch's schema identical whether or not it holds a bad value.
        if spec.type == "int":
            typed = typed.astype("Int64").where(ok)
        elif spec.type in ("float", "timestamp"):
            typed = typed.where(ok).astype("float64")
        elif spec.type == "bool":
            typed = typed.where(ok).astype("boolean")
        else:
            typed = typed.where(ok).astype("string")
        out[name] = typed

    bad = reasons != ""
    records = np.full(n, "", dtype=object)
    if bad.any():
        if RECORD in batch:
            records[bad] = batch[RECORD].to_numpy(dtype=object)[bad]
        else:
            raw_cols = [c for c in batch.columns if not str(c).startswith("__")]
            raw = batch.loc[bad, raw_cols].astype(object)
            rows = raw.where(raw.notna(), None).to_dict("records")  # NaN is not JSON: null
            records[bad] = [json.dumps(r, default=_json_default) for r in rows]
    frame = pd.DataFrame(out, index=batch.index)
    # Object columns of str, as they are: numpy's str arrays are as wide as their longest value (a 150-character
    # record made 2 M rows of reasons 1.2 GB).
    frame[REASON] = pd.Series(reasons, index=batch.index, dtype=object)
    frame[RECORD] = pd.Series(records, index=batch.index, dtype=object)
    if FILE in batch:
        frame[FILE] = batch[FILE].array  # as it is (text, or a file's path as a category): no copy per row
    return frame.reset_index(drop=True)


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
