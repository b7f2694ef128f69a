"""The audience report in a real headless browser (Debian's ``chromium``): it renders, without console errors,
with every plot decoded and every table present. Skipped, saying why, when ``chromium`` is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from experiments.audience_command import run_report
from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.config import NbmConfig
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import write_world

BROWSER_TIMEOUT_S = 60
# Injected into a copy of the page (the report itself carries no script): counts images that failed to decode.
PROBE = ("<script>window.addEventListener('load', function () { var broken = 0; for (var i of document.images) {"
         " if (!i.complete || i.naturalWidth === 0) broken++; } var p = document.createElement('p');"
         " p.id = 'probe'; p.textContent = 'images=' + document.images.length + ' broken=' + broken;"
         " document.body.appendChild(p); });</script>")


def _featuriser(dataset, config):
    """The features' featuriser, wired as `nbm report` wires it (nbm/cli.py)."""
    store = FeatureStore.build(dataset, config)
    return lambda *columns: store.featurise(Candidates(*columns))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (`make test` installs "
                    "Debian's chromium; apt-get install chromium)")
def test_the_report_renders_in_a_headless_browser(tmp_path) -> None:
    data, out = tmp_path / "data", tmp_path / "report.html"
    write_world(simulate(SimConfig(n_users=300, n_days=21, seed=2)).tables, data, "parquet")
    assert run_report(data, out, NbmConfig(), featuriser_for=_featuriser) == 0
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [shutil.which("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         probed.as_uri()], capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    probe = re.search(r'id="probe">images=(\d+) broken=(\d+)<', dom)
    assert probe, dom[-500:]
    # stages + states, retention, active users, engagement by stage, transitions, KPIs, contacts, local time
    assert (int(probe.group(1)), int(probe.group(2))) == (8, 0)
    assert dom.count("<table") >= 13 and "Audience report" in dom and "Data quality" in dom
    assert "Retention by signup cohort" in dom and "Active users" in dom and "Engagement score by stage" in dom
