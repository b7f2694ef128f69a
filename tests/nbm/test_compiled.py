"""The compiled booster predicts what ``Booster.predict`` predicts (nbm.compiled)."""

from __future__ import annotations

import sys

import lightgbm as lgb
import numpy as np
import pytest

from nbm import compiled
from nbm.artifact import Calibrator, ScoringArtifact

pytest.importorskip("lleaves")


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Numeric columns with missing values, and two categorical columns (codes) with missing values."""
    x = rng.normal(size=(n, 6))
    x[rng.random((n, 6)) < 0.15] = np.nan
    x[:, 4] = rng.integers(0, 12, n)
    x[:, 5] = rng.integers(0, 40, n)
    x[rng.random(n) < 0.1, 4] = np.nan
    logit = np.nan_to_num(x[:, 0]) - 0.5 * np.nan_to_num(x[:, 1]) + (x[:, 4] % 3 == 0) - 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    rng = np.random.default_rng(3)
    x, y = _data(rng, 4000)
    params = dict(num_leaves=15, learning_rate=0.1, verbose=-1, seed=1, min_data_per_group=5, cat_smooth=1)
    binary = lgb.train({**params, "objective": "binary"}, lgb.Dataset(x, y, categorical_feature=[4, 5]), 60)
    group = np.full(400, 10)
    rank = lgb.train({**params, "objective": "lambdarank"},
                     lgb.Dataset(x, y, group=group, categorical_feature=[4, 5]), 40)
    return {"binary": binary, "lambdarank": rank}


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_compiled_predictions_equal_the_booster(boosters, objective, tmp_path):
    booster = boosters[objective]
    forest = compiled.compile_booster(booster, tmp_path)
    assert forest is not None, compiled.LAST_FAILURE
    x, _ = _data(np.random.default_rng(9), 3000)
    x[:50, 4] = 99.0      # a category never seen in training
    x[50:100, 5] = np.nan
    x[100:150, :4] = np.nan
    expected = booster.predict(x.astype(np.float32), num_threads=1)
    got = forest.predict(x.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    if objective == "binary":
        assert (got > 0).all() and (got < 1).all()   # the objective's transform applied, as Booster.predict does


def test_object_code_is_cached_and_reused(boosters, tmp_path):
    first = compiled.compile_booster(boosters["binary"], tmp_path)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [first.path.name]           # no temporary left behind
    written = first.path.stat()
    second = compiled.compile_booster(boosters["binary"], tmp_path)
    assert second.path == first.path and sorted(tmp_path.iterdir()) == files
    again = second.path.stat()                                     # loaded, not compiled and replaced again
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    other = compiled.compile_booster(boosters["lambdarank"], tmp_path)
    assert other.path != first.path                                # another model, another file
    x, _ = _data(np.random.default_rng(2), 200)
    np.testing.assert_array_equal(second.predict(x), first.predict(x))


def test_artifact_scores_the_same_compiled_or_not(boosters, tmp_path):
    artifact = ScoringArtifact(boosters["binary"], Calibrator((0.0, 0.5, 1.0), (0.0, 0.2, 1.0)),
                               tuple(f"f{i}" for i in range(6)))
    fast = artifact.compile(tmp_path)
    assert fast.compiled is not None and artifact.compiled is None
    x, _ = _data(np.random.default_rng(5), 500)
    columns = {f"f{i}": x[:, i] for i in range(6)}
    np.testing.assert_allclose(fast.score(columns), artifact.score(columns), rtol=0, atol=1e-12)
    assert fast == artifact   # the compiled code is an accelerator, not part of the model


def _thresholds(trees: list[dict], feature: int) -> list[float]:
    out, stack = [], [t["tree_structure"] for t in trees]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            if node["split_feature"] == feature and node["decision_type"] == "<=":
                out.append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    return sorted(set(out))


def test_columns_scored_in_chunks_equal_the_booster(boosters, tmp_path):
    """Across chunk edges, with float64 columns (rounded through float32 as the matrix is) and scalar columns."""
    booster = boosters["binary"]
    forest = compiled.compile_booster(booster, tmp_path)
    n = 2 * compiled.CHUNK_ROWS + 37
    x, _ = _data(np.random.default_rng(11), n)
    # Float64 values just past the booster's thresholds on feature 1: rounded to float32 (as the matrix is)
    # some fall back across the split, so a path that skipped the rounding would score them differently.
    thresholds = _thresholds(booster.dump_model()["tree_info"], feature=1)
    near = np.array([t + abs(t) * 1e-9 + 1e-12 for t in thresholds])
    x[: len(near) * 20, 1] = np.tile(near, 20)[:n]
    columns = [x[:, j] for j in range(6)]
    columns[4] = 7.0                      # one value for every row (a user's attribute)
    expected_matrix = np.column_stack([np.full(n, 7.0) if j == 4 else x[:, j] for j in range(6)]).astype(np.float32)
    expected = booster.predict(expected_matrix, num_threads=1)
    unrounded = forest.predict(np.column_stack([np.full(n, 7.0) if j == 4 else x[:, j] for j in range(6)]))
    assert np.abs(unrounded - expected).max() > 1e-6, "no value crosses a split when rounded: the test proves little"
    np.testing.assert_allclose(forest.predict_columns(n, columns), expected, rtol=0, atol=1e-12)
    short = forest.predict_columns(10, [c if np.ndim(c) == 0 else c[:10] for c in columns])   # buffers reused
    np.testing.assert_allclose(short, expected[:10], rtol=0, atol=1e-12)
    assert forest.predict_columns(0, [np.zeros(0)] * 6).shape == (0,)


def test_spread_columns_score_as_their_arrays(boosters, tmp_path):
    """Spread columns (values + index, groups sharing an index, runs of adjacent and scattered positions)
    give the scores of the columns they stand for, across chunk edges; ``np.asarray`` builds the column."""
    from nbm.arrays import Spread, take

    booster = boosters["binary"]
    forest = compiled.compile_booster(booster, tmp_path)
    rng = np.random.default_rng(5)
    n = 2 * compiled.CHUNK_ROWS + 91
    x, _ = _data(rng, 40)
    shared = np.sort(rng.integers(0, 40, n))              # rows share 40 distinct value rows
    other = rng.integers(0, 40, n)                         # a second index, unsorted
    columns = [Spread(x[:, 0], shared), Spread(x[:, 1], shared), x[other, 2], Spread(x[:, 3], other),
               Spread(x[:, 4], shared), 3.0]               # positions 0, 1, 4 share an index: two runs
    dense = np.column_stack([np.asarray(c) if np.ndim(c) else np.full(n, c) for c in columns]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(columns[0]), x[shared, 0])
    expected = booster.predict(dense, num_threads=1)
    np.testing.assert_allclose(forest.predict_columns(n, columns), expected, rtol=0, atol=1e-12)
    rows = rng.integers(0, n, 500)
    cache: dict = {}
    picked = [take(c, rows, cache) if np.ndim(c) else c for c in columns]
    assert picked[0].index is picked[1].index is picked[4].index        # still one group
    np.testing.assert_allclose(forest.predict_columns(500, picked), expected[rows], rtol=0, atol=1e-12)


def test_without_the_compiler_scoring_falls_back(boosters, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lleaves", None)    # import fails
    assert compiled.compile_booster(boosters["binary"], tmp_path) is None
    assert "lleaves unavailable" in compiled.LAST_FAILURE[0]
    artifact = ScoringArtifact(boosters["binary"], Calibrator.identity(), tuple(f"f{i}" for i in range(6)))
    assert artifact.compile(tmp_path) is artifact


def test_wrong_width_is_refused(boosters, tmp_path):
    forest = compiled.compile_booster(boosters["binary"], tmp_path)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        forest.predict(np.zeros((3, 5)))
