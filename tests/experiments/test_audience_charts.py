"""The audience report's charts (issue 43): every plot has both axes labelled, axes labelled in % show
percentages (not fractions), and every legend sits right of its plot, off the data."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import PercentFormatter

import experiments.audience_report as audience_report
from experiments.audience import analyze
from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.config import NbmConfig
from nbm.dataset import build_dataset
from nbm.simulate import SimConfig, simulate


def test_every_chart_has_labelled_axes_percent_ticks_and_legends_off_the_data(monkeypatch) -> None:
    config = NbmConfig()
    dataset, quality = build_dataset(simulate(SimConfig(n_users=300, n_days=21, seed=2)).tables, config)
    store = FeatureStore.build(dataset, config)
    report = analyze(dataset, config, quality, featurise=lambda *columns: store.featurise(Candidates(*columns)))
    figures = []
    render = audience_report._png
    monkeypatch.setattr(audience_report, "_png", lambda figure: figures.append(figure) or render(figure))
    audience_report.render_html(report, config)
    assert len(figures) >= 8                      # the lifecycle, retention, active-user and engagement charts too
    plots = [axes for figure in figures for axes in figure.axes if axes.get_label() != "<colorbar>"]
    for axes in plots:
        title = axes.get_title() or axes.get_ylabel()
        assert axes.get_xlabel().strip() and axes.get_ylabel().strip(), f"an axis without a label: {title!r}"
        if "%" in axes.get_ylabel():
            assert isinstance(axes.yaxis.get_major_formatter(), PercentFormatter), f"fractions on {title!r}"
        legend = axes.get_legend()
        if legend is not None:
            anchor = legend.get_bbox_to_anchor().transformed(axes.transAxes.inverted())
            assert anchor.x0 >= 1.0, f"the legend of {title!r} sits on the data"
    plt.close("all")
