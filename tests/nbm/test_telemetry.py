"""nbm never calls out: every command, and the service's workers, run with the libraries' telemetry off."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbm import telemetry
from nbm.cli import main


@pytest.fixture
def tracking_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's environment that would let BentoML and MLflow report usage."""
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "False")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)


def test_every_command_switches_telemetry_off(tracking_on, capsys) -> None:
    import os

    assert main([]) == 2                      # any command line, even one that only prints the usage
    assert {k: os.environ.get(k) for k in telemetry.OFF} == telemetry.OFF


def test_the_service_workers_get_telemetry_off(tracking_on, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment `nbm serve` hands to BentoML's server (and so to its workers): BentoML reads
    BENTOML_DO_NOT_TRACK before it looks up its usage host at start and before every 12-hourly report."""
    from serving import launch

    seen: dict[str, str] = {}
    monkeypatch.setattr(launch, "_supervise", lambda command, env, *rest: seen.update(env) or 0)
    telemetry.switch_off()
    assert launch.serve(tmp_path, "models:/nbm-ranker@champion", host="127.0.0.1", port=1, workers=1,
                        explorer="greedy", threshold=0.0, reload_seconds=60.0, home=tmp_path) == 0
    assert {k: seen.get(k) for k in telemetry.OFF} == telemetry.OFF
    # Its own BentoML home (where /metrics' files live, wiped at every start): not another service's.
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    homes = set()
    for port in (3001, 3002):
        launch.serve(tmp_path, "models:/nbm-ranker@champion", host="127.0.0.1", port=port, workers=1,
                     explorer="greedy", threshold=0.0, reload_seconds=60.0, home=tmp_path)
        homes.add(seen["BENTOML_HOME"])
    assert len(homes) == 2 and all(h.startswith(str(tmp_path.resolve())) for h in homes)

    from bentoml._internal.utils.analytics import usage_stats

    usage_stats.do_not_track.cache_clear()
    assert usage_stats.do_not_track()           # BentoML's own reading of it: no usage host looked up
    import mlflow.telemetry.utils as mlflow_telemetry

    assert mlflow_telemetry.is_telemetry_disabled()
