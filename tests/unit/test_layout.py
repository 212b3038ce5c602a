"""The source root `platform/` must never become a package: it would shadow the standard library."""

import subprocess
import sys

from tests.conftest import ROOT


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert (ROOT / "platform" / "mlplatform" / "__init__.py").exists()


def test_stdlib_platform_imports_from_repo_root():
    # Ray puts the job's working directory first on sys.path; mimic that with cwd = repo root.
    code = "import sys; sys.path.insert(0, '.'); import platform; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("Linux", "Darwin", "Windows")


def test_import_has_no_side_effects(tmp_path):
    code = "import mlplatform, mlplatform.cli, mlplatform.pipeline, mlplatform.jobs, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []
