"""The reliability plot of ``nbm train`` (issue 43): zoomed to the range of the predictions, in percent, with each
bin's count."""

from __future__ import annotations

import numpy as np

from training.metrics import _reliability


def test_the_reliability_plot_is_zoomed_to_the_predictions_and_counts_its_bins() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0.001, 0.08, 5_000)                  # every prediction below 8 %
    y = (rng.random(5_000) < p).astype(float)
    fig = _reliability(p, y, bins=10)
    ax = fig.axes[0]
    top = ax.get_xlim()[1]
    assert 7.0 < top < 12.0                               # the axis in %, ending just past the largest bin
    assert ax.get_ylim() == ax.get_xlim()
    counts = [t.get_text() for t in ax.texts]
    assert counts == ["n=500"] * 10
    assert "%" in ax.get_xlabel() and "%" in ax.get_ylabel()
    import matplotlib.pyplot as plt

    plt.close(fig)
