"""The house: the source root is not a package, importing has no side effects, the layers hold, no circles."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert (ROOT / "platform" / "mlplatform" / "__init__.py").exists()


def test_stdlib_platform_imports_from_repo_root():
    # Ray puts the job's working directory first on sys.path; mimic that with cwd = repo root.
    code = "import sys; sys.path.insert(0, '.'); import platform; print(platform.system())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("Linux", "Darwin", "Windows")


IMPORT_EVERYTHING = """
import importlib, pkgutil, sys, threading
import mlplatform
before = threading.active_count()
for m in pkgutil.walk_packages(mlplatform.__path__, "mlplatform."):
    importlib.import_module(m.name)
ray, mlflow = sys.modules.get("ray"), sys.modules.get("mlflow")
assert ray is None or not ray.is_initialized(), "ray.init at import"
assert mlflow is None or not mlflow.is_tracking_uri_set(), "an MLflow tracking URI set at import"
assert threading.active_count() == before, "a thread started at import"
"""


def test_importing_every_module_has_no_side_effects(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == [], "files written at import"


def test_the_cli_imports_only_what_a_command_needs(tmp_path):
    # `mlplatform --help`, `status`, `down` must not load Ray or MLflow (≈ 3 s on the CI machine).
    code = "import sys, mlplatform.cli; print(sorted({'ray', 'mlflow', 'xgboost'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_layers_and_no_circles():
    """The import-linter contracts in pyproject.toml (also run by `make lint`)."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: make install-dev"
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def test_a_new_source_kind_is_one_module():
    """Formats come from the modules of mlplatform.data.sources: none is listed anywhere else."""
    from mlplatform.data import sources

    modules = {p.stem for p in (ROOT / "platform/mlplatform/data/sources").glob("*.py") if not p.stem.startswith("_")}
    assert set(sources.names()) == modules
    config = (ROOT / "platform/mlplatform/data/config.py").read_text()
    ingest = (ROOT / "platform/mlplatform/data/ingest.py").read_text()
    for name in sources.names():
        assert f'"{name}"' not in config and f'"{name}"' not in ingest, name


def test_the_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout and data flow") :]
    layout = layout[: layout.index("\n## ")]
    package = ROOT / "platform" / "mlplatform"
    missing = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "__init__.py" and p.parent.name != "sources" and p.name not in layout
    ]
    folders = [d.name + "/" for d in package.iterdir() if d.is_dir() and d.name != "__pycache__"]
    missing += [f for f in folders if f not in layout]
    assert not missing, f"README's layout section does not mention {missing}"
