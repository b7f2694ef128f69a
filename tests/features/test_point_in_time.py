"""Point-in-time correctness: features at t use only events strictly before t.

- truncating the log at t changes nothing for decisions at t;
- adding any events at or after t never changes them (hypothesis);
- the online snapshot as of now equals the offline features of a decision at now;
- featurising two user partitions and concatenating equals featurising the whole.

The smoothing strengths learned under ``prior_strength = "auto"`` are hyperparameters of the log given to
the build (features/priors.py): point-in-time holds for the same strengths, so the tests that change the
log pin the full log's strengths (and one shows that a fixed number needs no pinning).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.compute import Candidates
from features.declarations import FEATURE_NAMES
from features.pipeline import FeatureStore, Globals, partition
from nbm.config import NbmConfig
from nbm.schema import EVENT_TYPES


def _queries(dataset, t: int, n: int = 60, seed: int = 0) -> Candidates:
    rng = np.random.default_rng(seed)
    users = dataset.users["user_id"].to_numpy(dtype=object)
    messages = dataset.messages["message_id"].to_numpy(dtype=object)
    channels = np.array(["email", "sms", "push", "in_app", "wechat"], dtype=object)
    return Candidates(
        users[rng.integers(0, len(users), n)], messages[rng.integers(0, len(messages), n)],
        channels[rng.integers(0, len(channels), n)], np.full(n, t, dtype=np.int64),
        t + rng.integers(0, 24, n).astype(np.int64) * 3_600 * 10**9,
    )


def _features(dataset, config, rows: Candidates, strengths=None) -> pd.DataFrame:
    return FeatureStore.build(dataset, config, Globals.build(dataset, config, strengths)).featurise(rows)


@pytest.mark.parametrize("setting", [{}, {"prior_strength": 7.5}, {"segment_by": ["country", "age_band"]}],
                         ids=["auto", "fixed", "segments"])
def test_truncating_the_log_at_t_changes_nothing_at_t(dataset, setting) -> None:
    config = NbmConfig.model_validate({"features": setting})
    stamps = dataset.events["timestamp"]
    # "auto": the strengths learned on the full log, pinned (they are hyperparameters of the log).
    strengths = None if "prior_strength" in setting else Globals.build(dataset, config).strengths
    for quantile in (0.3, 0.6, 0.9):
        t = int(stamps.quantile(quantile).value)
        rows = _queries(dataset, t, seed=int(quantile * 10))
        # Include exact send times: their own send sits at t and must not count.
        full = _features(dataset, config, rows, strengths)
        truncated = replace(dataset, events=dataset.events[stamps.to_numpy(dtype="int64") < t].reset_index(drop=True))
        pd.testing.assert_frame_equal(full, _features(truncated, config, rows, strengths))


def test_a_send_does_not_see_itself_in_the_training_set(dataset, config) -> None:
    train = FeatureStore.build(dataset, config).training_set()
    events = dataset.events
    sends = events[events["event_type"] == "send"]
    # Naive reference for a sample: sends on the same channel in the 24 h before, strictly.
    sample = train.sample(200, random_state=1)
    for row in sample.itertuples():
        mask = ((sends["user_id"] == row.user_id) & (sends["channel"] == row.channel_name)
                & (sends["timestamp"] < row.timestamp) & (sends["timestamp"] >= row.timestamp - pd.Timedelta(hours=24)))
        assert row.uc_contacts_24h == mask.sum()
        week = ((sends["user_id"] == row.user_id) & (sends["timestamp"] < row.timestamp)
                & (sends["timestamp"] >= row.timestamp - pd.Timedelta(days=7)))
        assert row.user_contacts_7d == week.sum()
        received = ((sends["user_id"] == row.user_id) & (sends["message_id"] == row.message_id)
                    & (sends["timestamp"] < row.timestamp))
        assert row.um_received == received.sum()


event_rows = st.lists(
    st.tuples(st.sampled_from(EVENT_TYPES), st.integers(0, 599), st.integers(0, 20), st.sampled_from(["email", "sms", "push"]),
              st.integers(0, 3 * 86_400_000), st.floats(0, 100)),
    min_size=1, max_size=20,
)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=event_rows)
def test_events_at_or_after_t_never_change_features_at_t(dataset, config, extra) -> None:
    t = int(dataset.events["timestamp"].quantile(0.5).value)
    rows = _queries(dataset, t, n=40, seed=3)
    strengths = _strengths_of(dataset, config)
    before = _features(dataset, config, rows, strengths)
    users = dataset.users["user_id"].to_numpy(dtype=object)
    messages = dataset.messages["message_id"].to_numpy(dtype=object)
    added = pd.DataFrame({
        "event_id": [f"x{i}" for i in range(len(extra))],
        "timestamp": pd.to_datetime([t + ms * 10**6 for *_, ms, _ in extra], utc=True).astype("datetime64[ns, UTC]"),
        "user_id": [users[u] for _, u, *_ in extra],
        "event_type": [k for k, *_ in extra],
        "message_id": [messages[m % len(messages)] for _, _, m, *_ in extra],
        "channel": [c for *_, c, _, _ in extra],
        "decision_id": [None] * len(extra),
        "propensity": np.nan,
        "value": [v for *_, v in extra],
    })
    added["source_user_id"] = added["user_id"]
    added = added.astype({c: dataset.events[c].dtype for c in added.columns if c in dataset.events})
    events = pd.concat([dataset.events, added[dataset.events.columns]], ignore_index=True)
    events = events.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, _features(replace(dataset, events=events), config, rows, strengths))


_LEARNED: dict = {}


def _strengths_of(dataset, config):
    """The strengths learned on ``dataset`` (once: hypothesis calls the test many times)."""
    key = id(dataset)
    if key not in _LEARNED:
        _LEARNED[key] = Globals.build(dataset, config).strengths
    return _LEARNED[key]


def test_online_snapshot_equals_offline_features_at_now(dataset, config) -> None:
    store = FeatureStore.build(dataset, config)
    now = pd.Timestamp("2026-10-25T06:30:00Z")
    snapshot = store.snapshot(now)
    rows = _queries(dataset, now.value, n=80, seed=4)
    offline = store.featurise(rows)
    for column in snapshot.columns:
        expected = offline[column].to_numpy()
        got = snapshot.loc[rows.user_id, column].to_numpy()
        assert pd.Series(got).equals(pd.Series(expected)) or np.allclose(
            np.asarray(got, dtype=float), np.asarray(expected, dtype=float), equal_nan=True), column


def test_features_past_the_history_equal_the_general_path(dataset, config) -> None:
    """The service's case: decisions after the last event take the indexes' fast path (features/asof.py);
    at instants from a second to months after the history (windows of 1–90 days moving past events) the
    columns equal the general search's, exactly."""
    fast = FeatureStore.build(dataset, config).freeze()
    general = FeatureStore.build(dataset, config)
    for index in (*general.history.indexes(), *general.globals.rates.indexes()):
        index.after = np.iinfo(np.int64).max
    last = int(dataset.events["timestamp"].max().value)
    hour = 3_600 * 10**9
    for i, later in enumerate((1_000_000_000, 5 * hour, 23 * hour, 30 * hour, 8 * 24 * hour, 40 * 24 * hour,
                               100 * 24 * hour)):
        rows = _queries(dataset, last + later, n=300, seed=20 + i)
        assert all((rows.as_of >= index.after).all() for index in fast.history.indexes())
        got, expected = fast.featurise(rows), general.featurise(rows)
        pd.testing.assert_frame_equal(got, expected)


def test_two_partitions_concatenated_equal_the_whole(dataset, config) -> None:
    shared = Globals.build(dataset, config)
    whole = FeatureStore.build(dataset, config, shared).training_set()
    parts = [FeatureStore.build(partition(dataset, 2, i), config, shared).training_set() for i in range(2)]
    assert all(len(p) for p in parts)
    joined = pd.concat(parts).sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(joined, whole.sort_values("event_id").reset_index(drop=True))


def test_feature_columns_follow_the_declarations(dataset, config) -> None:
    frame = _features(dataset, config, _queries(dataset, int(dataset.events["timestamp"].max().value)))
    declared = [c for c in frame.columns if not c.startswith("attr_")]
    assert declared == list(FEATURE_NAMES)
    assert {"attr_country", "attr_loyalty_points"} <= set(frame.columns)
    assert isinstance(frame["attr_country"].dtype, pd.CategoricalDtype)


def test_training_set_built_by_partitions_equals_one_pass(dataset, config) -> None:
    from features.pipeline import build_training_set

    pd.testing.assert_frame_equal(build_training_set(dataset, config, partitions=3),
                                  build_training_set(dataset, config, partitions=1))


def test_attribute_categories_are_the_same_in_every_partition(dataset, config) -> None:
    from features.pipeline import build_training_set

    users = dataset.users.copy()
    users.loc[0, "country"] = "only-one-person-here"
    rare = replace(dataset, users=users)
    split = build_training_set(rare, config, partitions=3)
    assert "only-one-person-here" in split["attr_country"].cat.categories
    pd.testing.assert_frame_equal(split, build_training_set(rare, config, partitions=1))


def test_reslot_columns_equal_featurising_at_the_other_slot() -> None:
    """Stage 2 of two-stage scoring copies a candidate's columns and recomputes only the slot features."""
    from decision.candidates import expand
    from features.compute import reslot_columns
    from features.pipeline import FeatureStore
    from nbm.config import NbmConfig
    from nbm.dataset import build_dataset
    from nbm.simulate import SimConfig, simulate

    config = NbmConfig()
    tables = simulate(SimConfig(n_users=400, n_days=21, seed=9)).tables
    dataset, _ = build_dataset(tables, config, now=pd.Timestamp("2026-11-01T00:00:00Z"))
    store = FeatureStore.build(dataset, config)
    rows = expand(store, str(dataset.users["user_id"].iloc[7]), pd.Timestamp("2026-10-25T00:00:00Z"))
    assert len(rows) > 10
    full = store.featurise_columns(rows)
    base_index = np.zeros(len(rows), dtype=np.int64)        # every row from the first one's columns …
    same_pair = (rows.message_id == rows.message_id[0]) & (rows.channel == rows.channel[0])
    again = reslot_columns(store.history, store.globals.rates, store.globals.strengths, full, base_index, rows)
    for name, values in full.items():                     # … equals featurising the row itself
        np.testing.assert_array_equal(np.asarray(again[name])[same_pair], np.asarray(values)[same_pair], err_msg=name)
    # Spread columns (scoring's form) hold the same values, before and after reslotting.
    spread = store.featurise_columns(rows, spread=True)
    again_spread = reslot_columns(store.history, store.globals.rates, store.globals.strengths, spread, base_index, rows)
    for name, values in full.items():     # built and cast as the plain columns are
        dtype = np.asarray(values).dtype
        np.testing.assert_array_equal(np.asarray(spread[name]).astype(dtype), np.asarray(values), err_msg=name)
        np.testing.assert_array_equal(np.asarray(again_spread[name]).astype(dtype)[same_pair],
                                      np.asarray(values)[same_pair], err_msg=name)


def test_slot_times_equal_the_pandas_rules_across_dst_changes() -> None:
    from decision.candidates import _slot_times_pandas, slot_times

    zones = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Chatham"]
    for t in pd.date_range("2026-01-01", "2027-01-01", freq="29h", tz="UTC").asi8:
        for zone in zones:
            for hours in ((8, 10, 12, 15, 18, 21), (0, 1, 2, 3)):   # the small hours cross DST gaps and folds
                np.testing.assert_array_equal(slot_times(int(t), zone, hours, 24.0),
                                              _slot_times_pandas(int(t), zone, hours, 24.0), err_msg=f"{zone} {t}")


def test_local_time_is_the_same_for_few_and_many_instants() -> None:
    from features.history import FEW_INSTANTS, local_time

    times = pd.date_range("2026-03-01", "2026-11-30", freq="37min", tz="UTC").asi8
    zones = np.array(["Europe/Paris", "America/New_York", "Asia/Kolkata"], dtype=object)[np.arange(len(times)) % 3]
    hour, weekday = local_time(times, zones)                      # many distinct instants: pandas
    few = slice(0, FEW_INSTANTS // 2)
    h2, w2 = local_time(times[few], zones[few])                   # few: zoneinfo
    np.testing.assert_array_equal(h2, hour[few])
    np.testing.assert_array_equal(w2, weekday[few])
    local = pd.DatetimeIndex(times[:30]).tz_localize("UTC").tz_convert("Europe/Paris")
    paris = zones[:30] == "Europe/Paris"
    np.testing.assert_array_equal(h2[:30][paris], np.asarray(local.hour)[paris])


def test_shared_blocks_equal_featurising_each_row_alone(dataset, config) -> None:
    """Many decisions at two times (rows sharing users, pairs, messages, slots): the columns computed once
    per distinct key and broadcast equal those of each row featurised on its own."""
    from decision.pairs import expand_many

    store = FeatureStore.build(dataset, config)
    users = dataset.users["user_id"].to_numpy(dtype=object)[:40]
    t0 = int(dataset.events["timestamp"].astype("int64").quantile(0.8))
    now = np.where(np.arange(len(users)) % 2 == 0, t0, t0 + 3 * 86_400 * 10**9).astype(np.int64)
    rows = expand_many(store, np.concatenate([users, ["never-seen"]]), np.append(now, t0)).rows
    assert len(rows) > 1000
    together = store.featurise_columns(rows)
    sample = np.random.default_rng(0).choice(len(rows), 150, replace=False)
    # Each sampled row featurised on its own once (every column of it), then compared column by column.
    alone_rows = [store.featurise_columns(Candidates(*(getattr(rows, f)[[j]] for f in (
        "user_id", "message_id", "channel", "as_of", "send_at", "message_code", "channel_code")))) for j in sample]
    for name in together:
        alone = [np.asarray(row[name])[0] for row in alone_rows]
        got = list(np.asarray(together[name], dtype=object)[sample])
        assert all((pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(got, alone, strict=True)), name


def test_candidates_in_runs_featurise_as_the_same_rows_shuffled(dataset, config) -> None:
    """Rows grouped by decision share their user's features run by run (features/compute.py, ``_Shared``);
    the same rows in random order (no runs, shared by hashing) give the same columns."""
    from decision.pairs import expand_many

    store = FeatureStore.build(dataset, config)
    users = dataset.users["user_id"].to_numpy(dtype=object)[:12]
    now = np.full(len(users), int(dataset.events["timestamp"].quantile(0.7).value), dtype=np.int64)
    rows = expand_many(store, np.r_[users, users[:3]], np.r_[now, now[:3]]).rows   # a user in two runs
    order = np.random.default_rng(3).permutation(len(rows))
    shuffled = Candidates(*(None if getattr(rows, f) is None else getattr(rows, f)[order]
                            for f in ("user_id", "message_id", "channel", "as_of", "send_at", "message_code",
                                      "channel_code", "user_code")))
    got = store.featurise(rows)
    expected = store.featurise(shuffled).iloc[np.argsort(order)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_a_message_outside_the_catalog_shares_nothing_with_the_first_message(dataset, config) -> None:
    """Rows of one decision whose message is unknown (code −1) beside rows of the catalog's first message
    (code 0): shared blocks keep them apart, each featurises as it does alone."""
    from decision.pairs import expand_many

    store = FeatureStore.build(dataset, config)
    user = dataset.users["user_id"].to_numpy(dtype=object)[:1]
    t0 = int(dataset.events["timestamp"].astype("int64").quantile(0.9))
    rows = expand_many(store, np.repeat(user, 1), np.array([t0], dtype=np.int64)).rows
    first = np.flatnonzero(rows.message_code == 0)
    assert len(first) and len(rows) > 100
    message_id, message_code = rows.message_id.copy(), rows.message_code.copy()
    unknown = np.arange(len(rows)) % 3 == 0
    message_id[unknown], message_code[unknown] = "not-in-the-catalog", -1
    rows = Candidates(rows.user_id, message_id, rows.channel, rows.as_of, rows.send_at, message_code,
                      rows.channel_code, rows.user_code)
    together = store.featurise_columns(rows)
    for j in [*first[:3], *np.flatnonzero(unknown)[:3]]:
        alone = store.featurise_columns(Candidates(*(None if getattr(rows, f) is None else getattr(rows, f)[[j]]
                                                     for f in ("user_id", "message_id", "channel", "as_of", "send_at",
                                                               "message_code", "channel_code", "user_code"))))
        for name, values in together.items():
            a, b = np.asarray(values, dtype=object)[j], np.asarray(alone[name], dtype=object)[0]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (name, j)
