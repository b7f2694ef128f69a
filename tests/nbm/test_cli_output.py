"""One output policy for every command (issue 43): results on stdout, nbm's logs and progress on stderr, the
libraries' INFO lines and download bars silenced unless ``--verbose``, result lines unbroken in a pipe."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nbm.cli import main

pytestmark = pytest.mark.slow

NOISE = ("INFO mlflow", "INFO alembic", "Downloading artifacts", "[Fatal]", "Validating input example")


def test_train_puts_its_results_on_stdout_and_no_library_noise_on_stderr(tmp_path: Path, monkeypatch, capfd) -> None:
    for name in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    data = tmp_path / "world"
    assert main(["simulate", "--out", str(data), "--users", "400", "--days", "30", "--seed", "3"]) == 0
    capfd.readouterr()
    try:
        assert main(["train", "--data", str(data), "--no-policy-eval", "--trials", "2"]) == 0
        out, err = capfd.readouterr()
        assert "test_auc" in out and "nbm-ranker version 1" in out          # the summary: a result
        runs = next(line for line in out.splitlines() if line.startswith("open the runs:"))
        assert runs.endswith("--host 127.0.0.1") and str(tmp_path / "home" / "mlflow.db") in runs   # one line
        assert "time split" in err and not any(noise in err for noise in NOISE), err
        assert main(["recommend", "--data", str(data), "--now", "2026-10-31T23:00:00Z",
                     "--out", str(tmp_path / "r.jsonl")]) == 0
        out, err = capfd.readouterr()
        assert "decisions as of" in out and str(tmp_path / "r.jsonl") in out      # the summary and the path
        assert not any(noise in err for noise in NOISE), err
    finally:
        for name in ("mlflow", "optuna", "alembic", "urllib3", "distributed", "bentoml"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        for name in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
            os.environ.pop(name, None)


def test_results_in_a_pipe_are_160_columns_wide(capsys) -> None:
    """Under pytest stdout is not a terminal: the results console is 160 columns, not rich's 80 (evaluate's
    intervals and train's tables were cut there)."""
    from nbm.commands.options import RESULTS_WIDTH, results_console

    console = results_console()
    assert console.width == RESULTS_WIDTH == 160
    console.print("x" * 150)
    assert "x" * 150 in capsys.readouterr().out


def test_report_puts_its_summary_and_paths_on_stdout(tmp_path: Path, capsys) -> None:
    from experiments.audience_command import run_report
    from nbm.config import NbmConfig
    from nbm.simulate import SimConfig, simulate
    from nbm.simulate.manifest import write_world

    write_world(simulate(SimConfig(n_users=200, n_days=14, seed=4)).tables, tmp_path / "data", "parquet")
    assert run_report(tmp_path / "data", tmp_path / "report.html", NbmConfig()) == 0
    out, err = capsys.readouterr()
    assert "audience report" in out and "written:" in out and str(tmp_path / "report.html") in out
    assert "written:" not in err
