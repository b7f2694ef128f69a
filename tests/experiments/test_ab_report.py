"""``run_ab`` end to end on a written data directory: the HTML report, results.csv/json and the exit code."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.ab import METRICS, RESULT_COLUMNS
from experiments.ab_command import default_out, run_ab
from nbm.config import NbmConfig
from tests.experiments.conftest import EXPERIMENT, SCRIPT, SHARES, experiment_config, make_world, write_world

EMPTY_CHANNELS = 2  # nobody consents to in_app or wechat: those segments are left out
SEGMENT_VALUES = 1 + 4 + (len(NbmConfig().channels) + 1 - EMPTY_CHANNELS) + 3  # all, lifecycle, channel, tier


@pytest.fixture(scope="module")
def small_world() -> dict[str, pd.DataFrame]:
    return make_world(3_000, seed=11)


@pytest.fixture(scope="module")
def report(small_world, tmp_path_factory):
    """run_ab on the 3,000-user world, segmented by tier: (exit code, output directory, HTML)."""
    data, out = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("out") / "ab"
    write_world(small_world, data)
    code = run_ab(data, EXPERIMENT, out, experiment_config(), by="tier")
    return code, out, (out / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def srm_report(small_world, tmp_path_factory):
    """The same world with 40 % of the random arm's users lost from the decision log."""
    decisions = small_world["decisions"]
    random_users = decisions.loc[decisions["arm"] == "random", "user_id"].unique()
    lost = np.random.default_rng(0).choice(random_users, int(0.4 * len(random_users)), replace=False)
    data, out = tmp_path_factory.mktemp("srm-data"), tmp_path_factory.mktemp("srm-out")
    write_world({**small_world, "decisions": decisions[~decisions["user_id"].isin(lost)]}, data)
    code = run_ab(data, EXPERIMENT, out, experiment_config())
    return code, out, (out / "report.html").read_text(encoding="utf-8")


def test_the_report_is_one_self_contained_file(report) -> None:
    code, out, page = report
    assert code == 0
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page.lower() and "@import" not in page
    images = re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(len(src) > 5_000 for src in images)  # a real plot, not an empty placeholder


def test_the_report_names_every_arm_and_escapes_data(report) -> None:
    _, _, page = report
    for arm in SHARES:
        assert f">{arm}" in page
    assert SCRIPT not in page and html.escape(SCRIPT, quote=True) in page


def test_the_srm_banner_shows_only_when_srm_fails(report, srm_report) -> None:
    assert 'class="banner srm"' not in report[2]
    code, _, page = srm_report
    assert code == 1
    banner = page.index('class="banner srm"')
    assert banner < page.index("<h2>") and "Sample ratio mismatch" in page


def test_results_files_are_long_format_one_row_per_arm_metric_and_segment(report) -> None:
    _, out, _ = report
    csv = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    records = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert tuple(csv.columns) == RESULT_COLUMNS and tuple(records[0]) == RESULT_COLUMNS
    assert len(csv) == len(records) == len(SHARES) * len(METRICS) * SEGMENT_VALUES
    keys = {(r["arm"], r["metric"], r["segment"], r["segment_value"]) for r in records}
    assert len(keys) == len(records)
    holdout = next(r for r in records if r["arm"] == "holdout" and r["metric"] == "clicks_per_send"
                   and r["segment"] == "all")
    assert holdout["value"] is None and holdout["p_value"] is None and holdout["note"]  # NaN is null
    assert set(csv["test"].dropna()) == {"two_proportions", "welch", "ratio"}


def test_the_default_output_directory_is_named_after_the_experiment(small_world, tmp_path, monkeypatch) -> None:
    write_world(small_world, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert run_ab(tmp_path / "data", EXPERIMENT, None, experiment_config()) == 0
    assert (tmp_path / "ab-spring-test" / "report.html").is_file()
    assert default_out("a/b test") == Path("ab-a_b_test")


def test_empty_segments_are_one_note_not_rows(report) -> None:
    """Nobody consents to in_app or wechat: one line says so; no table row of nothing, no repeated note."""
    _, out, page = report
    assert page.count("segments with no users, left out of the results: channel = in_app, channel = wechat") == 1
    assert "segment has no users" not in page and ">in_app<" not in page and ">wechat<" not in page
    assert not pd.read_csv(out / "results.csv")["segment_value"].isin(["in_app", "wechat"]).any()


def test_the_summary_on_stdout_starts_with_the_verdicts(small_world, tmp_path, capsys) -> None:
    write_world(small_world, tmp_path / "data")
    assert run_ab(tmp_path / "data", EXPERIMENT, tmp_path / "out", experiment_config()) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("verdict:")]
    assert [line.split(":")[1].split()[0] for line in lines] == [m.name for m in METRICS]
    assert all("SRM check passed" in line for line in lines)
    assert not any(line.strip().startswith("verdict:") for line in capsys.readouterr().err.splitlines())
