"""The command line: simulate → validate, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from nbm.cli import main
from nbm.config import load_config

SMALL = ["--users", "400", "--days", "14", "--seed", "3"]


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    assert main(["simulate", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def messy_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messy")
    assert main(["simulate", "--out", str(out), "--users", "3000", "--days", "21", "--seed", "4", "--messy"]) == 0
    return out


def test_simulate_writes_the_tables_and_validates_clean(clean_world: Path, capsys) -> None:
    assert sorted(p.name for p in clean_world.iterdir()) == [
        "decisions.parquet", "events.parquet", "links.parquet", "messages.parquet", "users.parquet", "world.json"]
    assert main(["validate", "--data", str(clean_world)]) == 0


SHORT = '[lifecycle]\nactivity_events = ["convert"]\nnew_days = 1\nat_risk_after_days = 1\ndormant_after_days = 2\n'


@pytest.mark.parametrize(("toml", "dominant"), [("", None), (SHORT, "dormant")])
def test_validate_prints_the_stage_mix_and_flags_a_stage_holding_nearly_everyone(clean_world: Path, tmp_path: Path,
                                                                                  capsys, toml, dominant) -> None:
    """The operator's lifecycle on the data, at the log's end: the default splits the simulated users; counting
    conversions alone as activity, with thresholds of days, puts ≥ 90 % of them in `dormant`, which is said (a
    warning: the exit code stays 0), with the counts agreeing with `nbm.lifecycle.stage_mix`."""
    from nbm.dataset import load_dataset
    from nbm.lifecycle import stage_mix

    path = tmp_path / "nbm.toml"
    path.write_text(toml)
    assert main(["validate", "--data", str(clean_world), "--config", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    config = load_config(path, environ={})
    dataset, _ = load_dataset(clean_world, config)
    mix = stage_mix(dataset.events, dataset.users, config.lifecycle)
    assert mix.dominant == dominant
    assert "lifecycle stages at " in out and f"(activity: {', '.join(config.lifecycle.activity_events)})" in out
    for stage, n in mix.counts.items():
        assert f"{stage} {n / mix.total:.1%} ({n:,})" in out
    assert ("warning:" in out) == (dominant is not None)
    if dominant:
        assert f"are `{dominant}`" in out
        assert "check [lifecycle] (activity_events" in out      # the setting's name survives the printing


def test_decision_log_covers_every_send_with_its_propensity(clean_world: Path) -> None:
    from nbm.dataset import load_dataset
    from nbm.simulate.manifest import read_world_manifest

    dataset, _ = load_dataset(clean_world, load_config(environ={}))
    decisions = dataset.decisions.set_index("decision_id")
    sends = dataset.events[dataset.events["event_type"] == "send"]
    assert sends["decision_id"].isin(decisions.index).all()
    assert np.allclose(decisions.loc[sends["decision_id"], "propensity"].to_numpy(), sends["propensity"].to_numpy())
    assert not decisions.index.duplicated().any()
    # One decision per live user and day; most send nothing.
    per_day = decisions.groupby([decisions["timestamp"].dt.floor("D"), "user_id"]).size()
    assert (per_day == 1).all()
    assert len(decisions) > 2 * len(sends)
    config = read_world_manifest(clean_world)
    assert config is not None and config.n_days == int(decisions["timestamp"].dt.floor("D").nunique())


def test_simulate_as_csv_validates_clean(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), *SMALL, "--format", "csv"]) == 0
    assert (tmp_path / "events.csv").is_file() and not (tmp_path / "events.parquet").exists()
    assert main(["validate", "--data", str(tmp_path)]) == 0


def test_messy_world_exits_1_with_counts_equal_to_what_was_injected(messy_world: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    assert main(["validate", "--data", str(messy_world), "--json", str(report_path)]) == 1
    injected = json.loads((messy_world / "injected.json").read_text())
    report = json.loads(report_path.read_text())

    from nbm.dataset import load_dataset

    _, live = load_dataset(messy_world, load_config(environ={}))
    counts = live.counts().groupby(["table", "reason"])["rows"].sum().to_dict()
    expected = {(p["table"], p["reason"]): p["rows"] for p in injected["problems"]}
    assert expected and counts == expected
    assert live.duplicates["events"] == injected["duplicates"]["events"] > 0
    assert live.late_rows == injected["late_rows"] > 0
    assert report  # the JSON report was written and parses


def test_config_show_prints_toml_of_the_effective_configuration(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    assert main(["config", "show"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["home"] == str(tmp_path / "home")
    assert shown["mlflow_tracking_uri"].startswith("sqlite:///")
    assert "contact_policy" in shown and "attribution" in shown


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate"], "--out"),
        (["simulate", "--out", "x", "--users", "0"], "--users"),
        (["simulate", "--out", "x", "--epsilon", "2"], "--epsilon"),
        (["simulate", "--out", "x", "--start", "not a date"], "--start"),
        (["validate", "--data", "/nonexistent/nbm-data"], "/nonexistent/nbm-data"),
        (["validate", "--data", ".", "--now", "someday"], "--now"),
        (["config", "show", "--config", "/nonexistent/nbm.toml"], "does not exist"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_the_reason_and_no_traceback(argv, fragment, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err


def test_missing_table_is_unusable(tmp_path: Path, clean_world: Path, capsys) -> None:
    for name in ("messages", "users"):
        (tmp_path / f"{name}.parquet").write_bytes((clean_world / f"{name}.parquet").read_bytes())
    assert main(["validate", "--data", str(tmp_path)]) == 2
    assert "events" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from nbm.errors import NbmError

    with pytest.raises(NbmError):
        main(["--debug", "validate", "--data", str(tmp_path / "missing")])
    with pytest.raises(NbmError):
        main(["validate", "--data", str(tmp_path / "missing"), "--debug"])


def test_the_installed_console_script_runs(tmp_path: Path) -> None:
    """The `nbm` entry point itself: exit code and stderr of a real process."""
    exe = Path(sys.executable).with_name("nbm")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nbm.cli"]
    env = {**os.environ, "NBM_HOME": str(tmp_path)}
    done = subprocess.run([*command, "validate", "--data", str(tmp_path / "nope")], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 2
    assert "does not exist" in done.stderr or "nope" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_exits_2_and_leaves_that_servers_files(tmp_path, capsys, monkeypatch) -> None:
    """A second `nbm serve` on a busy port stops before it writes anything: the workers' file of the server
    already there (named by host and port) is neither replaced nor removed."""
    import socket

    from serving.balance import create, workers_file

    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        theirs = create(workers_file((tmp_path / "home").resolve(), "127.0.0.1", port), 4)
        before = theirs.read_bytes()
        assert main(["serve", "--data", str(tmp_path), "--port", str(port), "--workers", "2"]) == 2
        err = capsys.readouterr().err
        assert f"127.0.0.1:{port} is already in use" in err and "Traceback" not in err
        assert theirs.read_bytes() == before


def test_serve_without_data_and_without_the_demo_world_exits_2_saying_how_to_build_it(tmp_path, capsys,
                                                                                        monkeypatch) -> None:
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    assert main(["serve", "--port", "3999"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "home" / "demo") in err and "make run" in err and "Traceback" not in err
