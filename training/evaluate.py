"""``nbm evaluate``: a candidate model's offline metrics and policy value from the logs, before an A/B test.

The data directory's training set is split by time as ``nbm train`` splits it (the same windows: given,
or a quarter of the log's span each, at most 7 days; the split used is printed); on the test window the
candidate's predictions are scored (AUC, log loss, calibration, NDCG) and every logged decision is
replayed (:mod:`training.policy_eval`): the candidate's decision policy and the baselines (uniform,
popular, lifecycle rules), valued by SNIPS and doubly robust — the candidate's calibrated probability
(× value for a revenue reward) as the direct model — with seeded bootstrap intervals and the effective
sample size. The table names the reward (revenue, conversions or clicks per decision, as the data allows:
:mod:`training.reward`) and what a logged action was matched on (:mod:`training.actions`). For a
simulated world the ground truth's value of each policy is shown beside the estimates. A policy whose
effective sample size is below ``[training] min_policy_ess`` has its estimates shown as unusable, not as
numbers (they stay in ``--out``'s JSON and in MLflow, beside the ESS).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.pipeline import build_training_set
from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import load_dataset, unusable
from nbm.errors import UnusableInputError
from training.actions import describe
from training.fit import DAY, TimeSplit, time_split
from training.metrics import evaluate
from training.policy_eval import PolicyReport, censoring_note, evaluate_policies

METRICS = ("test_rows", "test_auc", "test_log_loss", "test_ece", "test_ndcg_at_3", "test_positive_rate",
           "test_mean_prediction")


@dataclass(frozen=True)
class OfflineEvaluation:
    model: str
    metrics: dict[str, float]
    report: PolicyReport
    learned_until: pd.Timestamp | None = None     # the model learned from sends up to here: in-sample after the test start
    test_start: pd.Timestamp | None = None
    fit: str = "registered"      # or "held_out": the fit the model's training judged (it was refitted since)

    @property
    def in_sample(self) -> bool:
        """The model learned from (part of) the test window: its figures there are optimistic."""
        return self.learned_until is not None and self.test_start is not None and self.learned_until >= self.test_start

    def to_dict(self) -> dict:
        clean = lambda x: None if isinstance(x, float) and not math.isfinite(x) else x  # noqa: E731
        return {"model": self.model, "metrics": {k: clean(v) for k, v in self.metrics.items()},
                "in_sample": self.in_sample, "fit": self.fit, "model_trained_until": None if self.learned_until is None
                else self.learned_until.isoformat(),
                "scope": self.report.logged.scope, "decisions": int(len(self.report.logged.frame)),
                "reward": self.report.logged.reward.name, "reward_unit": self.report.logged.reward.unit,
                "actions": self.report.replayed.action.label,
                "logged_sends_eligible": {k: int(v) for k, v in self.report.replayed.covered.items()},
                "censored_decisions": int(self.report.logged.censored),
                "outcome_horizon_hours": clean(float(self.report.logged.horizon_hours)),
                "logged_mean_reward": clean(float(self.report.logged.frame["reward"].mean()))
                if len(self.report.logged.frame) else None,
                "policies": {name: {k: clean(v) for k, v in asdict(v).items()}
                             for name, v in self.report.values.items()}}


def evaluate_model(data: Path, config: NbmConfig, artifact: ScoringArtifact, model: str,
                   test_days: float | None = None, max_decisions: int | None = 50_000, seed: int = 0,
                   console: Console | None = None, valid_days: float | None = None,
                   held_out=None) -> OfflineEvaluation:
    """Offline metrics and off-policy value of ``artifact`` (named ``model``) on the last ``test_days``
    (``None``: :func:`training.fit.time_split`'s default from the log's span, as ``nbm train``'s).

    A model refitted on a log that includes the test window would be judged in-sample: ``held_out()``, when
    given, returns the fit its training judged (or ``None``), and that fit is evaluated instead where it
    did not learn from the window — the figures then value the training procedure, honestly, and the result
    says so (``fit``)."""
    from nbm.simulate.manifest import read_world_manifest

    console = console or Console(stderr=True)
    with console.status("loading and validating the data…"):
        dataset, report = load_dataset(data, config)
    reason = unusable(dataset, report, data)
    if reason:
        raise UnusableInputError(reason)
    with console.status(f"building the evaluation set ({len(dataset.events):,} events)…"):
        rows = build_training_set(dataset, config)
    split = time_split(rows, valid_days=valid_days, test_days=test_days)
    console.print(describe_split(split, derived=valid_days is None or test_days is None))
    fit = "registered"
    if artifact.learned_from(split.test_start) and held_out is not None:
        try:
            candidate = held_out()
        except Exception as exc:  # noqa: BLE001 — an unreadable held-out fit: the registered one, labelled in-sample
            console.print(f"[yellow]the held-out fit cannot be loaded ({exc}): evaluating the registered model[/yellow]")
            candidate = None
        if candidate is not None and not candidate.learned_from(split.test_start):
            artifact, fit = candidate, "held_out"
            console.print("the registered model was refitted on a log that includes this test window: evaluating "
                          "the fit its training judged (held out from the window) instead")
    evaluation = evaluate(artifact, split.test)
    history_rows = pd.concat([split.train, split.valid], ignore_index=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("replaying the test window's decisions", total=None)
        report = evaluate_policies(dataset, config, history_rows, split.test, split.test_start, {"model": artifact},
                                   artifact, max_decisions=max_decisions, seed=seed,
                                   sim_config=read_world_manifest(data),
                                   progress=lambda k, n: bar.update(task, completed=k, total=n))
    metrics = {k: float(v) for k, v in evaluation.metrics.items() if k in METRICS}
    learned = None if artifact.trained_until is None else pd.Timestamp(artifact.trained_until)
    if learned is not None and learned.tzinfo is None:
        learned = learned.tz_localize("UTC")
    return OfflineEvaluation(model + (", held-out fit" if fit == "held_out" else ""), metrics, report, learned,
                             split.test_start, fit)


def describe_split(split: TimeSplit, derived: bool = False) -> str:
    """The time split in one line: each window's start, length and sends (``derived``: some window was not
    given and follows the log's span)."""
    start, end = split.train["timestamp"].min(), split.test["timestamp"].max()
    valid, test = (split.test_start - split.valid_start) / DAY, (end - split.test_start) / DAY
    how = " (not given: each a quarter of the log's span, at most 7 days)" if derived else ""
    at = "%Y-%m-%d %H:%M"
    return (f"time split{how}: train {start:{at}} – {split.valid_start:{at}} ({len(split.train):,} sends), "
            f"validation {valid:.2f} days ({len(split.valid):,}), test {test:.2f} days from "
            f"{split.test_start:{at}} UTC ({len(split.test):,})")


def print_evaluation(console: Console, result: OfflineEvaluation, min_ess: float) -> None:
    if result.in_sample:
        console.print(f"[bold yellow]warning:[/bold yellow] the model learned from sends up to "
                      f"{result.learned_until:%Y-%m-%d %H:%M} UTC, after this test window's start "
                      f"({result.test_start:%Y-%m-%d %H:%M}): these figures are in-sample, hence optimistic. "
                      "`nbm train` serves the model refitted on its whole log; its held-out figures are in its "
                      "MLflow run. Evaluate it on sends logged after it was trained.")
    table = Table(title=f"nbm evaluate: {result.model}" + (" — in-sample" if result.in_sample else ""),
                  show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in METRICS:
        value = result.metrics.get(name, float("nan"))
        table.add_row(name, "—" if not math.isfinite(value) else f"{value:,.0f}" if name.endswith("rows")
                      else f"{value:.4f}")
    console.print(table)
    print_policy_values(console, result.report, min_ess=min_ess, ips=True)


def print_policy_values(console: Console, report: PolicyReport, min_ess: float, ips: bool = False) -> None:
    """The off-policy values of ``report`` as a table (``nbm evaluate``, and ``nbm train`` without IPS), its
    censoring note, and a warning for policies that few logged decisions support.

    A policy whose effective sample size is below ``min_ess`` (``[training] min_policy_ess``) gets "n/a"
    for its estimates and "ESS < min_ess" for their intervals: a handful of effective samples is no
    estimate, and its percentile bootstrap interval is not one either. Undefined values print as "—"."""
    values = Table(title=f"policy value on the test window ({report.logged.reward.unit}; {len(report.logged.frame):,} "
                         f"logged decisions, scope: {report.logged.scope})")
    columns = ("policy", "SNIPS", "SNIPS 95% CI", "DR", "DR 95% CI") + (("IPS",) if ips else ()) + ("ESS", "true value")
    for column in columns:
        values.add_column(column, justify="left" if column == "policy" else "right")
    too_few = f"ESS < {min_ess:,g}"
    for v in report.values.values():
        if v.ess >= min_ess:
            estimates = (_number(v.snips), _interval(v.snips_low, v.snips_high), _number(v.dr),
                         _interval(v.dr_low, v.dr_high), *((_number(v.ips),) if ips else ()))
        else:
            estimates = ("n/a", too_few, "n/a", too_few, *(("n/a",) if ips else ()))
        values.add_row(v.policy, *estimates, _number(v.ess, "{:,.0f}"), _number(v.true_value))
    if len(report.logged.frame):
        values.add_row("logged", f"{report.logged.frame['reward'].mean():.4f}", *([""] * (len(columns) - 2)))
    console.print(values)
    if report.replayed.covered:
        console.print(describe(report.replayed.action, report.replayed.covered))
    if (line := censoring_note(report.logged)):
        console.print(line)
    low = [v.policy for v in report.values.values() if not v.ess >= min_ess]
    if low:
        console.print(f"[yellow]few logged decisions support {', '.join(low)} (effective sample size < {min_ess:,g}): "
                      "their SNIPS/DR estimates and bootstrap intervals are unusable, so they are not shown; compare "
                      "them on logs that explore more (the service's own decision log)[/yellow]")


def _number(value: float, style: str = "{:.4f}") -> str:
    return style.format(value) if math.isfinite(value) else "—"


def _interval(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]" if math.isfinite(low) and math.isfinite(high) else "—"


def write_evaluation(result: OfflineEvaluation, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
