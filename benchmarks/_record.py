"""Where every benchmark writes its raw results: benchmarks/results/<name>-<date>.json (not committed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def save(name: str, payload: Any) -> Path:
    out = Path(__file__).resolve().parent / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    return out
