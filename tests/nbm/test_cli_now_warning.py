"""``nbm recommend`` warns on stderr when its decision time lies more than a day after the data's last event
(issue 43: the wall clock, 36 days after the data ended, went by without a word). The model and the batch
scoring are stubbed: the warning is the command's, decided before any scoring."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import serving.batch_scoring
import serving.registry
from nbm.cli import main
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import write_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.Timestamp]:
    out = tmp_path_factory.mktemp("now-warning")
    tables = simulate(SimConfig(n_users=60, n_days=7, seed=5)).tables
    write_world(tables, out, "parquet")
    last = pd.to_datetime(tables["events"]["timestamp"], utc=True).max()
    return out, last


@pytest.fixture()
def stubbed(monkeypatch: pytest.MonkeyPatch) -> list[pd.Timestamp]:
    """No model, no scoring: records the ``now`` each batch run was asked to decide at."""
    asked: list[pd.Timestamp] = []

    def recommend_all(dataset, config, artifact, version, now, out, *rest, **options):
        asked.append(now)
        return serving.batch_scoring.BatchSummary(decisions=0, with_items=0, items=0, reasons={})

    monkeypatch.setattr(serving.registry, "load_model", lambda uri, config: serving.registry.LoadedModel(None, "stub"))
    monkeypatch.setattr(serving.batch_scoring, "recommend_all", recommend_all)
    return asked


def _recommend(world, tmp_path, *now: str) -> int:
    data, _ = world
    return main(["recommend", "--data", str(data), "--out", str(tmp_path / "out.jsonl"), *now])


@pytest.mark.parametrize("after, warned", [(pd.Timedelta(hours=12), False), (pd.Timedelta(hours=24), False),
                                          (pd.Timedelta(hours=25), True), (pd.Timedelta(days=36), True)])
def test_a_decision_time_over_a_day_past_the_data_is_warned_about(world, stubbed, tmp_path, capsys, after,
                                                                  warned) -> None:
    _, last = world
    now = last + after
    assert _recommend(world, tmp_path, "--now", now.isoformat()) == 0
    assert stubbed == [now]
    captured = capsys.readouterr()
    assert ("warning" in captured.err) is warned
    assert "warning" not in captured.out
    if warned:
        assert f"{after / pd.Timedelta(days=1):.1f} days after the data's last event ({last.isoformat()})" in captured.err
        assert f"--now {last.isoformat()}" in captured.err


def test_the_wall_clock_default_is_named_in_the_warning(world, stubbed, tmp_path, capsys) -> None:
    _, last = world
    assert _recommend(world, tmp_path) == 0
    (now,) = stubbed
    assert now > last + pd.Timedelta(days=1)        # a simulated world ends 2026-11-01: the clock is later
    assert "`--now` (not given: the wall clock)" in capsys.readouterr().err
