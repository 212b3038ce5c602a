from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "jobs" / "configs" / "demo.yaml"


@pytest.fixture
def repo_root() -> Path:
    return ROOT
