"""A/B analysis of an experiment's decision log: per-arm metrics and tests, CUPED, SRM, sequential, segments.

The unit is the user (arms are a salted hash of the canonical user id, :mod:`nbm.policy.assign`). A user's arm
is the arm of their decisions; a user seen in two arms is a data problem, counted and left out. The window runs
from the experiment's first decision to its last; each user is measured from their own first decision to the
window's end, and every user of an arm counts — also one never sent anything (the holdout by design). The
CUPED covariate is the same metric over the user's pre-period, of equal length, just before their window.

Everything is computed once per user with ``np.bincount`` over event positions, then per segment × arm on the
per-user arrays; the daily sequential series comes from cumulative per-day counts. Pure: no files, no printing
(:mod:`experiments.ab_report` renders, :mod:`experiments.ab_command` writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from experiments import stats
from nbm.config import ARMS, LIFECYCLE_STAGES, ExperimentConfig, NbmConfig
from nbm.dataset import Dataset
from nbm.errors import UnusableInputError, UsageError
from nbm.lifecycle import stages_at, stages_in_use

DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min
NAN = float("nan")
ALL = "all"
NO_CHANNEL = "none"
MISSING = "(missing)"
MAX_CATEGORIES = 10
"""A numeric ``--by`` attribute with more distinct values than this is cut into quartiles."""

MetricKind = Literal["rate", "mean", "ratio"]


@dataclass(frozen=True)
class Metric:
    """One per-user metric: a ``rate`` (share of users with ≥ 1 ``event``), a ``mean`` or a ``ratio`` of sums."""

    name: str
    kind: MetricKind
    description: str
    event: str = ""
    guardrail: bool = False

    @property
    def test(self) -> str:
        """The test behind the comparison, by its `experiments.stats` name."""
        return {"rate": "two_proportions", "mean": "welch", "ratio": "ratio"}[self.kind]


METRICS: tuple[Metric, ...] = (
    Metric("open_rate", "rate", "share of users with at least one open in their window", "open"),
    Metric("click_rate", "rate", "share of users with at least one click in their window", "click"),
    Metric("convert_rate", "rate", "share of users with at least one conversion in their window", "convert"),
    Metric("revenue_per_user", "mean", "conversion revenue (`value`) per user in their window, zeros included"),
    Metric("unsubscribe_rate", "rate", "share of users who unsubscribed in their window (guardrail)",
           "unsubscribe", guardrail=True),
    Metric("clicks_per_send", "ratio", "clicks over the experiment's sends, summed over the arm's users"),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
COUNTED = {"open": "opens", "click": "clicks", "convert": "converts", "unsubscribe": "unsubscribes"}

RESULT_COLUMNS = (
    "experiment", "arm", "control", "metric", "test", "segment", "segment_value", "n_users", "n_control_users",
    "value", "control_value", "difference", "ci_low", "ci_high", "relative", "relative_ci_low",
    "relative_ci_high", "statistic", "p_value", "p_adjusted", "cuped_difference", "cuped_ci_low",
    "cuped_ci_high", "cuped_p_value", "variance_reduction", "sequential_p_value", "guardrail",
    "guardrail_breach", "note",
)
DAILY_COLUMNS = (
    "day", "arm", "control", "metric", "n_users", "n_control_users", "value", "control_value", "difference",
    "ci_low", "ci_high", "p_value", "sequential_p_value", "sequential_ci_low", "sequential_ci_high",
)


@dataclass(frozen=True)
class AbResult:
    """The analysis of one experiment; frames are long format.

    ``arms``: one row per arm (expected share, users, expected users, decisions, sends). ``results``: one row per
    arm × metric × segment value with users (:data:`RESULT_COLUMNS`; the control's own rows carry its value and
    no test).
    ``daily``: one row per day × treatment arm × per-user metric, on the data cumulated to that day's end.
    ``users``: one row per analysed user (arm, first decision, per-user counts and metrics, pre-period values,
    segments). ``problems`` make the command exit 1; ``notes`` are said in the report but are no problem.
    ``empty_segments``: the (segment, value) pairs with no users at all, left out of ``results`` (one note says
    which).
    """

    experiment: str
    control: str
    primary_metric: str
    alpha: float
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    arms: pd.DataFrame
    results: pd.DataFrame
    daily: pd.DataFrame
    users: pd.DataFrame
    srm: stats.SrmResult
    users_in_several_arms: int
    decisions_without_arm: int
    segments: tuple[str, ...]
    notes: tuple[str, ...]
    empty_segments: tuple[tuple[str, str], ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        found = []
        if self.srm.mismatch:
            found.append(f"sample ratio mismatch: users per arm {list(self.srm.observed)} against expected "
                         f"{[round(e, 1) for e in self.srm.expected]} (χ² p = {self.srm.p_value:.2g} < "
                         f"{self.srm.threshold:g}); the assignment or the logging is broken — do not trust the "
                         "differences")
        if self.users_in_several_arms:
            found.append(f"{self.users_in_several_arms:,} users have decisions in more than one arm; left out")
        if self.decisions_without_arm:
            found.append(f"{self.decisions_without_arm:,} decisions of the experiment have no `arm`; left out")
        return tuple(found)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


def analyze(dataset: Dataset, experiment: str, config: NbmConfig, *, by: str | None = None,
            control: str | None = None, primary_metric: str = "convert_rate", alpha: float = 0.05,
            srm_threshold: float = 0.001, tau: float = stats.DEFAULT_TAU) -> AbResult:
    """Analyse experiment ``experiment`` of ``dataset`` against arm ``control``.

    ``by`` names a ``users`` column to segment by (besides lifecycle stage and preferred channel);
    ``primary_metric`` is the per-user metric of the daily cumulative-lift series shown first.

    Raises
    ------
    UsageError
        Unknown experiment (the message lists those present), ``control`` not an arm, ``by`` not a column.
    UnusableInputError
        The data has no decision log.
    """
    metric = METRIC_BY_NAME.get(primary_metric)
    if metric is None or metric.kind == "ratio":
        raise ValueError(f"`primary_metric` must be a per-user metric among "
                         f"{[m.name for m in METRICS if m.kind != 'ratio']}, got {primary_metric!r}")
    decisions, notes = _experiment_decisions(dataset.decisions, experiment)
    without_arm = int(decisions["arm"].isna().sum())
    decisions = decisions[decisions["arm"].notna()]
    if not len(decisions):
        raise UnusableInputError(f"experiment {experiment!r}: none of its {without_arm:,} decisions has an `arm`")
    arms, shares, control, design_note = _design(config, experiment, decisions["arm"].unique(), control)
    notes.append(design_note)
    _check_by(dataset.users, by)
    users, several = _assign_users(decisions, arms)
    start, end = int(decisions["t"].min()), int(decisions["t"].max())
    window_events = _count_events(users, dataset.events, pd.Index(decisions["decision_id"]), end)
    segments = _add_segments(users, dataset, config, by, notes)
    unknown = int((pd.Index(dataset.users["user_id"]).get_indexer(users.index) < 0).sum())
    if unknown:
        notes.append(f"{unknown:,} users of the decision log are not in the `users` table: segment `{MISSING}`")

    daily = _daily(users, window_events, arms, control, start, end, experiment, alpha, tau)
    results, empty = _results(users, segments, arms, control, experiment, alpha, daily)
    if empty:
        notes.append("segments with no users, left out of the results: "
                     + ", ".join(f"{segment} = {value}" for segment, value in empty))
    srm = stats.srm(users["arm"].value_counts().reindex(arms, fill_value=0).to_numpy(), shares, srm_threshold)
    arm_table = pd.DataFrame({
        "arm": arms, "expected_share": shares / shares.sum(), "users": list(srm.observed),
        "expected_users": list(srm.expected),
        "decisions": users.groupby("arm")["decisions"].sum().reindex(arms, fill_value=0).to_numpy(),
        "sends": users.groupby("arm")["sends"].sum().reindex(arms, fill_value=0).to_numpy(),
        "is_control": [a == control for a in arms],
    })
    notes += [f"arm `{a}` has no users" for a, n in zip(arms, srm.observed) if n == 0]
    return AbResult(experiment, control, primary_metric, alpha, pd.Timestamp(start, tz="UTC"),
                    pd.Timestamp(end, tz="UTC"), arm_table, results, daily, users, srm, several, without_arm,
                    tuple(segments), tuple(notes), tuple(empty))


# ------------------------------------------------------------------------------------------- assignment


def _experiment_decisions(decisions: pd.DataFrame | None, experiment: str) -> tuple[pd.DataFrame, list[str]]:
    """The experiment's decisions (with ``t`` in ns) and a note on how they were found."""
    if decisions is None or not len(decisions):
        raise UnusableInputError("`nbm ab` needs the decision log (decisions.parquet or decisions.csv); "
                                 "the data has none")
    notes = []
    named = decisions["experiment"].dropna()
    if len(named):
        present = sorted(named.unique())
        chosen = decisions[decisions["experiment"] == experiment]
        if not len(chosen):
            raise UsageError(f"`--experiment`: no decisions of experiment {experiment!r}; experiments in the "
                             f"decision log: {', '.join(map(repr, present))}")
    else:
        chosen = decisions[decisions["arm"].notna()]
        if not len(chosen):
            raise UsageError(f"`--experiment` {experiment!r}: the decision log names no experiment and no "
                             "decision has an `arm`; there is no experiment to analyse")
        notes.append(f"the decision log has no `experiment` column: all {len(chosen):,} decisions with an `arm` "
                     f"are taken as experiment {experiment!r}")
    chosen = chosen[["decision_id", "user_id", "timestamp", "arm"]].copy()
    chosen["t"] = _ns(chosen["timestamp"])
    return chosen, notes


def _design(config: NbmConfig, experiment: str, seen: np.ndarray,
            control: str | None) -> tuple[list[str], np.ndarray, str, str]:
    """Arms in display order, their expected shares, the control arm and where the shares come from: the
    configured ``[experiment]`` when it has this name; else the default design when the arms seen are its
    arms (``nbm simulate --ab`` without a configuration); else equal shares."""
    design = config.experiment
    standard = ExperimentConfig()
    if design.name == experiment or set(seen) == {a for a, s in standard.arms.items() if s > 0}:
        source = "the configured [experiment]" if design.name == experiment else "the default design"
        design = design if design.name == experiment else standard
        designed = {a: s for a, s in design.arms.items() if s > 0}
        arms = _ordered(set(designed) | set(seen))
        shares = np.array([designed.get(a, 0.0) for a in arms])
        default = design.control
        note = f"expected shares from {source}: " + ", ".join(f"{a} {designed.get(a, 0.0):.0%}" for a in arms)
    else:
        arms = _ordered(set(seen))
        shares = np.ones(len(arms))
        default = next((a for a in ("rules", "holdout") if a in arms), sorted(arms)[0])
        note = (f"experiment {experiment!r} is not the configured one: equal expected shares assumed for the SRM "
                "check (configure its [experiment] arms, or pass --shares)")
    chosen = default if control is None else control
    if chosen not in arms:
        raise UsageError(f"`--control`: {chosen!r} is not an arm of experiment {experiment!r}; arms: "
                         f"{', '.join(arms)}")
    return arms, shares, chosen, note


def preferred_channel(users: pd.DataFrame, config: NbmConfig) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each user's first consented channel in configuration order (code into the names), ``none`` last."""
    consent = users["consent"].explode()
    rank = consent.map({c: i for i, c in enumerate(config.channels)}).dropna()
    best = rank.groupby(level=0).min().reindex(users.index)
    codes = np.where(best.notna(), best.fillna(0), len(config.channels)).astype(np.int64)
    return codes, (*config.channels, NO_CHANNEL)


def _ordered(arms: set[str]) -> list[str]:
    return [a for a in ARMS if a in arms] + sorted(arms - set(ARMS))


def _assign_users(decisions: pd.DataFrame, arms: list[str]) -> tuple[pd.DataFrame, int]:
    """One row per user of a single arm (index ``user_id``): arm, first decision (ns), decisions."""
    per_user = decisions.groupby("user_id", sort=True).agg(arms_seen=("arm", "nunique"), arm=("arm", "first"),
                                                           first_t=("t", "min"), decisions=("t", "size"))
    several = per_user["arms_seen"] > 1
    users = per_user.loc[~several, ["arm", "first_t", "decisions"]].copy()
    users["arm"] = pd.Categorical(users["arm"], categories=arms)
    return users, int(several.sum())


# ------------------------------------------------------------------------------------------ per-user data


def _count_events(users: pd.DataFrame, events: pd.DataFrame, decision_ids: pd.Index, end: int) -> pd.DataFrame:
    """Add per-user counts, metrics and pre-period values to ``users``; return the window's outcome events.

    A send counts for the experiment when it carries one of its decision ids, or carries none and falls in the
    user's window. Returns ``pos`` (user position), ``event_type``, ``t`` and ``value`` of the outcome events.
    """
    pos = users.index.get_indexer(events["user_id"])
    known = pos >= 0
    pos = pos[known]
    kind = events["event_type"].to_numpy()[known]
    t = _ns(events["timestamp"])[known]
    value = events["value"].to_numpy(dtype=float, na_value=0.0)[known]
    first = users["first_t"].to_numpy()[pos]
    in_window, in_pre = (t >= first) & (t <= end), (t >= 2 * first - end) & (t < first)
    n = len(users)

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(pos[mask], weights=None if weights is None else weights[mask], minlength=n)

    decision_id = events["decision_id"][known]
    send = kind == "send"
    carries = decision_ids.unique().get_indexer(decision_id) >= 0  # hash look-up (`isin` on arrow text loops)
    ours = send & (carries | (decision_id.isna().to_numpy() & in_window))
    users["sends"], users["pre_sends"] = count(ours), count(send & in_pre)
    for event, column in COUNTED.items():
        users[column], users["pre_" + column] = count((kind == event) & in_window), count((kind == event) & in_pre)
    convert = kind == "convert"
    users["revenue"], users["pre_revenue"] = count(convert & in_window, value), count(convert & in_pre, value)
    for metric in METRICS:
        if metric.kind == "rate":
            for prefix in ("", "pre_"):
                users[prefix + metric.name] = (users[prefix + COUNTED[metric.event]] > 0).astype(float)
    users["revenue_per_user"], users["pre_revenue_per_user"] = users["revenue"], users["pre_revenue"]
    outcome = in_window & np.isin(kind, list(COUNTED))
    return pd.DataFrame({"pos": pos[outcome], "event_type": kind[outcome], "t": t[outcome], "value": value[outcome]})


def _add_segments(users: pd.DataFrame, dataset: Dataset, config: NbmConfig, by: str | None,
                  notes: list[str]) -> dict[str, list[str]]:
    """Add the segment columns to ``users``; return each segment's values in display order."""
    profiles = dataset.users.set_index("user_id").reindex(users.index)
    # the stage the decision path saw at the user's first decision: nbm.lifecycle's, from activity before it
    stage = stages_at(dataset.events, dataset.users, users.index.to_numpy(dtype=object),
                      users["first_t"].to_numpy(), config.lifecycle)
    users["lifecycle"] = np.asarray(LIFECYCLE_STAGES, dtype=object)[stage]
    codes, names = preferred_channel(profiles, config)
    users["channel"] = np.asarray(names, dtype=object)[codes]
    segments = {ALL: [ALL], "lifecycle": list(stages_in_use(config.lifecycle)),
                "channel": [*config.channels, NO_CHANNEL]}
    users[ALL] = ALL
    if by is not None:
        name, values, order = _attribute(profiles, by, notes)
        users[name] = values
        segments[name] = order
    return segments


def _check_by(profiles: pd.DataFrame, by: str | None) -> None:
    """``by`` must name a text or number column of ``users`` (not the id, the consent list or a time)."""
    usable = [c for c in profiles.columns if c not in ("user_id", "consent")
              and not pd.api.types.is_datetime64_any_dtype(profiles[c])]
    if by is not None and by not in usable:
        raise UsageError(f"`--by`: {by!r} is not a user attribute; attributes: {', '.join(usable) or 'none'}")


def _attribute(profiles: pd.DataFrame, by: str, notes: list[str]) -> tuple[str, np.ndarray, list[str]]:
    """The ``--by`` segment's name, each user's value as text (quartiles for a many-valued number), the order."""
    column = profiles[by]
    if pd.api.types.is_numeric_dtype(column) and column.nunique() > MAX_CATEGORIES:
        column = pd.qcut(column, 4, duplicates="drop")
        order = [str(c) for c in column.cat.categories]
        notes.append(f"`--by {by}` has many values: segmented by quartile")
    else:
        order = sorted({str(v) for v in column.dropna()})
    text = column.astype(object).map(str, na_action="ignore").fillna(MISSING).to_numpy(dtype=object)
    if (text == MISSING).any():
        order.append(MISSING)
    name = by if by not in (ALL, "lifecycle", "channel") else f"users.{by}"
    return name, text, order


# ------------------------------------------------------------------------------------------ comparisons


@dataclass(frozen=True)
class _Arm:
    """The users of one arm within one segment value: positions into the per-user arrays."""

    columns: dict[str, np.ndarray]
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, column: str) -> np.ndarray:
        return self.columns[column][self.index]


def _results(users: pd.DataFrame, segments: dict[str, list[str]], arms: list[str], control: str, experiment: str,
             alpha: float, daily: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """One row per segment value × metric × arm; BH over the segment tests; guardrail breaches flagged.

    A segment value without any user gives no rows (it would be arms × metrics rows of nothing): it is
    returned apart, as (segment, value), for one note.
    """
    columns = {c: users[c].to_numpy(dtype=float) for m in METRICS for c in (m.name, "pre_" + m.name)
               if m.kind != "ratio"}
    columns |= {c: users[c].to_numpy(dtype=float) for c in ("clicks", "sends", "pre_clicks", "pre_sends")}
    code = users["arm"].cat.codes.to_numpy()
    rows, empty = [], []
    for segment, values in segments.items():
        column = users[segment].to_numpy()
        for value in values:
            inside = column == value
            if segment != ALL and not inside.any():
                empty.append((segment, value))
                continue
            by_arm = {a: _Arm(columns, np.flatnonzero(inside & (code == i))) for i, a in enumerate(arms)}
            for metric in METRICS:
                for arm in arms:
                    row = _row(metric, by_arm[arm], by_arm[control], arm == control, alpha)
                    row.update(experiment=experiment, arm=arm, control=control, metric=metric.name,
                               segment=segment, segment_value=value, guardrail=metric.guardrail)
                    rows.append(row)
    results = pd.DataFrame(rows)
    overall = (results["segment"] == ALL).to_numpy()
    latest = daily[daily["day"] == daily["day"].max()].set_index(["arm", "metric"])["sequential_p_value"]
    keys = pd.MultiIndex.from_frame(results.loc[overall, ["arm", "metric"]])
    results.loc[overall, "sequential_p_value"] = latest.reindex(keys).to_numpy(dtype=float)
    tested = ~overall & results["p_value"].notna().to_numpy()
    if tested.any():
        results.loc[tested, "p_adjusted"] = stats.benjamini_hochberg(results.loc[tested, "p_value"], alpha).p_adjusted
    evidence = np.where(overall, results["p_value"], results["p_adjusted"])
    results["guardrail_breach"] = results["guardrail"] & (results["difference"] > 0) & (evidence < alpha)
    return results[list(RESULT_COLUMNS)], empty


def _row(metric: Metric, t: _Arm, c: _Arm, is_control: bool, alpha: float) -> dict[str, object]:
    """The comparison of arm ``t`` with the control ``c`` on ``metric`` (for the control, just its value)."""
    row: dict[str, object] = dict.fromkeys(RESULT_COLUMNS, NAN)
    if is_control:
        value, note = _estimate(metric, c)
        row.update(test="", n_users=len(c), n_control_users=len(c), value=value, control_value=value,
                   note="; ".join(n for n in ("the control arm", note) if n))
        return row
    test, cuped = _test(metric, t, c, alpha), _cuped(metric, t, c, alpha)
    row.update(test=test.method, n_users=test.n_treatment, n_control_users=test.n_control, value=test.treatment,
               control_value=test.control, difference=test.difference, ci_low=test.ci_low, ci_high=test.ci_high,
               relative=test.relative, relative_ci_low=test.relative_ci_low, relative_ci_high=test.relative_ci_high,
               statistic=test.statistic, p_value=test.p_value)
    notes = [test.note]
    if cuped is None:
        notes.append("CUPED: an arm has no sends, no ratio to linearise")
    else:
        adjusted = cuped.comparison
        row.update(cuped_difference=adjusted.difference, cuped_ci_low=adjusted.ci_low, cuped_ci_high=adjusted.ci_high,
                   cuped_p_value=adjusted.p_value, variance_reduction=cuped.variance_reduction)
        if adjusted.note and adjusted.note != test.note:
            notes.append("CUPED: " + adjusted.note)
    row["note"] = "; ".join(dict.fromkeys(n for n in notes if n))
    return row


def _estimate(metric: Metric, arm: _Arm) -> tuple[float, str]:
    if not len(arm):
        return NAN, "empty arm: no users"
    if metric.kind != "ratio":
        return float(arm[metric.name].mean()), ""
    sends = arm["sends"].sum()
    return (float(arm["clicks"].sum() / sends), "") if sends else (NAN, "no sends in this arm: no clicks per send")


def _test(metric: Metric, t: _Arm, c: _Arm, alpha: float) -> stats.Comparison:
    if metric.kind == "rate":
        return stats.two_proportions(int(t[metric.name].sum()), len(t), int(c[metric.name].sum()), len(c), alpha)
    if metric.kind == "mean":
        return stats.welch(t[metric.name], c[metric.name], alpha)
    return stats.ratio_metric(t["clicks"], t["sends"], c["clicks"], c["sends"], alpha)


def _cuped(metric: Metric, t: _Arm, c: _Arm, alpha: float) -> stats.CupedResult | None:
    """CUPED with the user's pre-period value of the metric; a ratio through its delta-method linearisation.

    Per arm, ``l = R + (clicks − R · sends) / mean(sends)`` has mean ``R`` and the delta method's variance, so
    Welch on ``l`` is the ratio test; its covariate is ``pre_clicks − R_pre · pre_sends`` (``R_pre`` pooled).
    ``None`` when an arm with users has no sends (no ratio to linearise).
    """
    treated = np.r_[np.ones(len(t), bool), np.zeros(len(c), bool)]
    if metric.kind != "ratio":
        return stats.cuped(np.r_[t[metric.name], c[metric.name]], np.r_[t["pre_" + metric.name],
                                                                        c["pre_" + metric.name]], treated, alpha)
    if any(len(arm) and not arm["sends"].sum() for arm in (t, c)):
        return None
    pre_clicks, pre_sends = np.r_[t["pre_clicks"], c["pre_clicks"]], np.r_[t["pre_sends"], c["pre_sends"]]
    ratio_pre = pre_clicks.sum() / pre_sends.sum() if pre_sends.sum() else 0.0
    return stats.cuped(np.r_[_linearised(t), _linearised(c)], pre_clicks - ratio_pre * pre_sends, treated, alpha)


def _linearised(arm: _Arm) -> np.ndarray:
    clicks, sends = arm["clicks"], arm["sends"]
    if not len(arm):
        return clicks
    ratio = clicks.sum() / sends.sum()
    return ratio + (clicks - ratio * sends) / sends.mean()


# -------------------------------------------------------------------------------------------- sequential


def _daily(users: pd.DataFrame, window_events: pd.DataFrame, arms: list[str], control: str, start: int, end: int,
           experiment: str, alpha: float, tau: float) -> pd.DataFrame:
    """Per day, on all data up to that day's end: each per-user metric's fixed-horizon and mSPRT comparison."""
    day0 = start - start % DAY_NS
    days = (end - day0) // DAY_NS + 1
    code = users["arm"].cat.codes.to_numpy().astype(np.int64)   # int8 codes × days overflow past 63 days
    entry = (users["first_t"].to_numpy() - day0) // DAY_NS
    event_day = (window_events["t"].to_numpy() - day0) // DAY_NS
    event_pos, kinds = window_events["pos"].to_numpy(), window_events["event_type"].to_numpy()

    def per_arm_day(user_pos: np.ndarray, day: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount(code[user_pos] * days + day, weights=weights, minlength=len(arms) * days)
        return np.cumsum(flat.reshape(len(arms), days), axis=1)

    n = per_arm_day(np.arange(len(users)), entry)
    frames = []
    for metric in (m for m in METRICS if m.kind != "ratio"):
        if metric.kind == "rate":
            chosen = kinds == metric.event
            first_day = pd.Series(event_day[chosen]).groupby(event_pos[chosen]).min()
            x = per_arm_day(first_day.index.to_numpy(), first_day.to_numpy())
            sums, squares = x, x
        else:
            convert = kinds == "convert"
            sums, squares = _cumulative_sums(event_pos[convert], event_day[convert],
                                             window_events["value"].to_numpy()[convert], code, len(arms), days)
        for t_code, arm in enumerate(arms):
            if arm == control:
                continue
            frames.append(_daily_arm(metric, arm, control, n, sums, squares, t_code, arms.index(control), day0,
                                     alpha, tau))
    if not frames:
        return pd.DataFrame(columns=list(DAILY_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(DAILY_COLUMNS)]


def _cumulative_sums(pos: np.ndarray, day: np.ndarray, value: np.ndarray, code: np.ndarray, n_arms: int,
                     days: int) -> tuple[np.ndarray, np.ndarray]:
    """Per arm and day: Σ and Σ² over users of each user's revenue cumulated to that day (dense over payers)."""
    sums, squares = np.zeros((n_arms, days)), np.zeros((n_arms, days))
    payers, row = np.unique(pos, return_inverse=True)
    if not len(payers):
        return sums, squares
    cumulative = np.cumsum(np.bincount(row * days + day, weights=value, minlength=len(payers) * days)
                           .reshape(len(payers), days), axis=1)
    for a in range(n_arms):
        mine = cumulative[code[payers] == a]
        sums[a], squares[a] = mine.sum(axis=0), (mine**2).sum(axis=0)
    return sums, squares


def _daily_arm(metric: Metric, arm: str, control: str, n: np.ndarray, sums: np.ndarray, squares: np.ndarray,
               t: int, c: int, day0: int, alpha: float, tau: float) -> pd.DataFrame:
    if metric.kind == "rate":
        sequential = stats.msprt_proportions(sums[t], n[t], sums[c], n[c], tau=tau, alpha=alpha)
        fixed = [stats.two_proportions(int(a), int(b), int(x), int(y), alpha)
                 for a, b, x, y in zip(sums[t], n[t], sums[c], n[c])]
    else:
        sequential = stats.msprt(n[t], sums[t], squares[t], n[c], sums[c], squares[c], tau=tau, alpha=alpha)
        summary = stats.SampleStats.from_sums
        fixed = [stats.welch(summary(int(a), s, q), summary(int(b), r, w), alpha)
                 for a, s, q, b, r, w in zip(n[t], sums[t], squares[t], n[c], sums[c], squares[c])]
    return pd.DataFrame({
        "day": pd.to_datetime(day0 + np.arange(n.shape[1]) * DAY_NS, utc=True), "arm": arm, "control": control,
        "metric": metric.name, "n_users": n[t], "n_control_users": n[c],
        "value": [f.treatment for f in fixed], "control_value": [f.control for f in fixed],
        "difference": [f.difference for f in fixed], "ci_low": [f.ci_low for f in fixed],
        "ci_high": [f.ci_high for f in fixed], "p_value": [f.p_value for f in fixed],
        "sequential_p_value": sequential.p_value, "sequential_ci_low": sequential.ci_low,
        "sequential_ci_high": sequential.ci_high,
    })


def _ns(timestamps: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds (NaT as the int64 minimum)."""
    return timestamps.to_numpy(dtype="datetime64[ns]").view("int64")
