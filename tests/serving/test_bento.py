"""The service as a Bento (issue 42): ``bentoml build`` of the repository's ``bentofile.yaml`` makes a Bento that
holds every module the service imports and the project's declared dependencies, without a network."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = ROOT / "bentofile.yaml"


def _bentofile() -> dict:
    return yaml.safe_load(BENTOFILE.read_text())


def test_the_bento_declares_the_projects_dependencies() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _bentofile()["python"]["packages"] == declared, \
        "bentofile.yaml's python.packages must repeat pyproject.toml's [project] dependencies"
    assert _bentofile()["service"] == "serving.service:NbmService"


@pytest.mark.slow
def test_bentoml_build_makes_a_bento_with_every_module_the_service_imports(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "--do-not-track", "-o", "tag", str(ROOT)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert (bento / "bento.yaml").is_file()

    # Every file of this repository that importing the service loads is in the Bento's source.
    probe = ("import sys, serving.service; root = sys.argv[1]; "
             "print('\\n'.join(sorted(m.__file__ for m in list(sys.modules.values()) "
             "if getattr(m, '__file__', None) and m.__file__.startswith(root))))")
    loaded = subprocess.run([sys.executable, "-c", probe, str(ROOT) + os.sep], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    packages = {"nbm", "features", "decision", "serving", "training", "experiments"}
    files = [f for f in (Path(f).relative_to(ROOT) for f in loaded.stdout.split()) if f.parts[0] in packages]
    assert Path("serving/service.py") in files and len(files) > 20
    missing = [str(f) for f in files if not (bento / "src" / f).is_file()]
    assert not missing, f"modules the service imports that the Bento lacks: {missing}"
    assert not (bento / "src" / "tests").exists() and not (bento / "src" / "benchmarks").exists()

    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    for dependency in _bentofile()["python"]["packages"]:
        package = dependency.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        assert any(line.startswith(package) for line in requirements), package
    assert "python:3.11" in (bento / "env" / "docker" / "Dockerfile").read_text()
