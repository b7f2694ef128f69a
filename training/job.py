"""``nbm train``: load → validate → features → time split → LightGBM → calibration → MLflow → policy value → gate.

With ``--trials N`` a resumable Optuna study (``training.tune``) picks the parameters first. After the fit,
the decision policy of the new model (the challenger), of the current champion and of three baselines is
replayed over the test window's logged decisions and valued off-policy (``training.policy_eval``); on a
simulated world the ground truth values them too. The promotion gate (:mod:`training.gate`) never
promotes a degenerate model (the version is logged and tagged why, the champion stays); otherwise it
moves the ``champion`` alias to the challenger when no champion exists, when the lower bound of the 95 %
interval of the doubly robust value difference (challenger − champion, paired over the same decisions)
is above zero, or when ``force_promote`` says so (logged as such).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.pipeline import Globals, build_training_set
from nbm.cluster import dask_client, describe
from nbm.commands.options import results_console
from nbm.config import NbmConfig
from nbm.dataset import load_dataset, unusable
from nbm.errors import UnusableInputError, UsageError
from nbm.simulate.manifest import read_world_manifest
from training.evaluate import describe_split, print_policy_values
from training.compare import AUTO, Comparison, capture_metrics, capture_of, compare_objectives, concordance_of
from training.fit import RankerParams, fit_ranker, refit_ranker, target_of, time_split
from training.gate import NO_SERVING, GateDecision, ModelEvidence, degeneracy, promotion_gate
from training.metrics import evaluate
from training.policy_eval import PolicyReport, evaluate_policies, policy_metrics
from training.risk import fit_risk, risk_columns
from training.sources import PARTITION_EVENTS, InMemory, OnParts, PolicyData
from training.tracking import MODEL_NAME, LoggedModel, finite, load_registered, log_data, log_training, use_tracking
from training.tune import tune



@dataclass(frozen=True)
class TrainResult:
    logged: LoggedModel
    metrics: dict[str, float]
    promoted: bool
    gate: GateDecision | None = None
    policy: PolicyReport | None = None
    comparison: Comparison | None = None


def run_training(data: Path, config: NbmConfig, params: RankerParams, experiment: str = "nbm",
                 valid_days: float | None = None, test_days: float | None = None, trials: int = 0,
                 console: Console | None = None, force_promote: bool = False,
                 max_decisions: int | None = 50_000, evaluate_policy: bool = True, compare: bool = False,
                 results: Console | None = None) -> TrainResult:
    console = console or Console(stderr=True)
    began = time.perf_counter()
    options = dict(experiment=experiment, trials=trials, console=console, force_promote=force_promote,
                   max_decisions=max_decisions, evaluate_policy=evaluate_policy, compare=compare, results=results,
                   began=began)
    from features.parts import event_parts

    parts = event_parts(data)
    if parts:
        return _run_on_parts(data, parts, config, params, valid_days, test_days, **options)
    with console.status("loading and validating the data…"):
        dataset, report = load_dataset(data, config)
    reason = unusable(dataset, report, data)
    if reason:
        raise UnusableInputError(reason)
    partitions = max(1, -(-len(dataset.events) // PARTITION_EVENTS))
    where = f", on the Dask cluster {config.dask_scheduler!r}" if config.dask_scheduler else ""
    with contextlib.ExitStack() as stack:     # the Dask cluster (when one is set) lives until the model is fitted
        client = stack.enter_context(dask_client(config.dask_scheduler))
        if client is not None:
            console.print(describe(client), highlight=False, soft_wrap=True)
        with console.status(f"building the training set ({len(dataset.events):,} events, {partitions} partition(s)"
                            f"{where})…"):
            shared = Globals.build(dataset, config)       # codes, population rates, learned smoothing strengths
            rows = build_training_set(dataset, config, partitions, shared=shared, client=client)
        split = time_split(rows, valid_days, test_days)
        console.print(describe_split(split, derived=valid_days is None or test_days is None))
        return _train(data, config, params, **options, source=InMemory(dataset, partitions), report=report,
                      shared=shared, rows=rows, split=split, client=client)


def _run_on_parts(data: Path, parts: list[Path], config: NbmConfig, params: RankerParams, valid_days: float | None,
                  test_days: float | None, **options) -> TrainResult:
    """:func:`run_training` of a data directory whose events are parts (``events/*.parquet``, features/parts.py):
    the shared tables and the training set built by the Dask cluster's workers, a part each, the training set
    (with its unsubscribe labels) gathered here; the rest as in memory (:mod:`training.sources`)."""
    from features.parts import Tables, scattered, shared_of_parts, training_rows_of_parts

    console: Console = options["console"]
    if not config.dask_scheduler:
        raise UsageError(f"the events of {str(data)!r} are parts (events/*.parquet): training on them needs a Dask "
                         "cluster (`dask_scheduler = \"local\"` or a scheduler's address; docs/deploy.md)")
    with console.status("loading and validating the catalog, users and links…"):
        tables = Tables.read(data, config, decisions=options["evaluate_policy"])
    if not len(tables.messages):
        raise UnusableInputError(f"the messages table of {str(data)!r} has no valid message: nothing to recommend")
    with dask_client(config.dask_scheduler) as client:
        console.print(describe(client), highlight=False, soft_wrap=True)
        on_workers = scattered(client, tables, config)
        with console.status(f"summarising {len(parts)} event parts on the Dask cluster {config.dask_scheduler!r}…"):
            plan = shared_of_parts(client, data, tables, config, on_workers=on_workers)
        report = tables.report
        report.rows_read["events"], report.rows_kept["events"] = plan.rows_read, plan.rows_kept
        report.add([plan.problems.drop(columns=["part"], errors="ignore")])
        with console.status(f"building the training set ({plan.rows_kept:,} events, {len(parts)} parts, on the "
                            f"Dask cluster)…"):
            rows = training_rows_of_parts(client, plan, tables, config, on_workers,
                                          columns=functools.partial(risk_columns, config=config))
        split = time_split(rows, valid_days, test_days)
        console.print(describe_split(split, derived=valid_days is None or test_days is None))
        return _train(data, config, params, **options, source=OnParts(client, plan, tables, config, on_workers),
                      report=report, shared=plan.shared, rows=rows, split=split, client=client)


def _train(data: Path, config: NbmConfig, params: RankerParams, *, experiment: str, trials: int, console: Console,
           force_promote: bool, max_decisions: int | None, evaluate_policy: bool, compare: bool,
           results: Console | None, began: float, source: InMemory | OnParts, report, shared: Globals,
           rows: pd.DataFrame, split, client) -> TrainResult:
    """:func:`run_training` from the time split on (``client``: the Dask cluster's, or ``None``; ``source``: where
    the log is, :mod:`training.sources`)."""
    if client is not None and len(split.train) >= config.training.dask_min_rows and params.objective != "lambdarank":
        console.print(f"boosters fitted with lightgbm.dask on the cluster ({len(split.train):,} training rows ≥ "
                      f"[training] dask_min_rows {config.training.dask_min_rows:,}; lambdarank in-process)")
    use_tracking(config, experiment)
    with mlflow.start_run(run_name=run_name(params, data, rows)):
        mlflow.set_tags({"nbm.data": str(data), "nbm.valid_start": str(split.valid_start),
                         "nbm.test_start": str(split.test_start), "nbm.trials": str(trials)})
        mlflow.set_tag("nbm.data_digest", log_data(data, rows))
        comparison = None
        if params.objective == AUTO or compare:
            comparison = _compare(split, params, source.messages, config, console, client)
            if params.objective == AUTO:
                params = replace(params, objective=comparison.chosen)
        if trials > 0:
            storage = f"sqlite:///{(config.home.expanduser() / 'optuna.db').as_posix()}"
            study_name = f"{experiment}-{params.objective}-{params.target}-seed{params.seed}"
            with console.status(f"tuning with Optuna: {trials} trials (study {study_name!r}, resumable)…"):
                params, study = tune(split, params, trials, storage, study_name)
            mlflow.log_metrics(finite({"optuna_best_valid_loss": study.best_value}))
        if comparison is not None and trials <= 0:
            candidate = comparison.candidates[params.objective]
            artifact, evaluation = candidate.artifact, evaluate(candidate.artifact, split.test, figures=True)
        else:
            with console.status(f"fitting LightGBM ({params.objective}, {len(split.train):,} training rows)…"):
                artifact = fit_ranker(split, params, source.messages, client, config.training.dask_min_rows)
            evaluation = evaluate(artifact, split.test, figures=True)
        with console.status("learning the risk of a send (P(unsubscribe))…"):
            artifact = replace(artifact, risk=fit_risk(source.risk_dataset, split, artifact, config),
                               prior_strengths=shared.strengths.as_dict(),
                               topics=tuple(map(str, shared.vocabulary.topics)))    # its message_topic codes
        # The held-out model is judged (metrics, comparison, policy value, gate); the one served is the same
        # procedure applied to the whole log (training.fit.refit_ranker).
        served = artifact
        if params.refit:
            with console.status(f"refitting on the whole log ({len(rows):,} rows)…"):
                served = refit_ranker(artifact, split, params, source.messages, rows, client,
                                      config.training.dask_min_rows)
        mlflow.set_tag("mlflow.runName", run_name(params, data, rows))      # the objective "auto" chose
        mlflow.set_tag("nbm.objective", params.objective)
        # Without early stopping (never, here) LightGBM leaves best_iteration 0 and every round is used.
        rounds = artifact.booster.best_iteration or artifact.booster.current_iteration()
        concordance = concordance_of(artifact, split.test, source.messages, config.arbitration)
        capture = capture_of(artifact, split.test, source.messages, config)
        metrics = {**evaluation.metrics, "best_iteration": float(rounds),
                   "train_rows": float(len(split.train)), "valid_rows": float(len(split.valid)),
                   "train_positives": float(target_of(split.train, params.target).sum()),
                   "valid_positives": float(target_of(split.valid, params.target).sum()),
                   "value_concordance": concordance.value, "concordance_users": float(concordance.groups),
                   **capture_metrics(capture),
                   "validation_problems": float(len(report.problems)), "seconds": time.perf_counter() - began,
                   "refit_rows": float(len(rows)) if served is not artifact else 0.0}
        risk = artifact.risk
        metrics.update(risk_model=float(risk.booster is not None), risk_overall_rate=risk.overall,
                       **{"unsubscribe_cost_auto_" + re.sub(r"[^A-Za-z0-9_.-]", "_", c): v
                          for c, v in risk.channel_costs.items()})
        metrics.update({f"prior_strength_{k}": v for k, v in shared.strengths.as_dict().items()})
        if artifact.followup is not None:
            metrics.update({f"followup_strength_{k}": v for k, v in artifact.followup.strengths.items()})
            metrics["followup_overall"] = artifact.followup.overall
            if served.followup is not None and served is not artifact:     # the table the registered model carries
                metrics["refit_followup_overall"] = served.followup.overall
        with console.status("logging to MLflow…"):
            logged = log_training(served, split.test.head(200), asdict(params), metrics, evaluation.figures,
                                  held_out=None if served is artifact else artifact)
        champion_version = _champion_version()
        report = None
        if evaluate_policy:
            report = _evaluate_policy(source, config, data, split, artifact, champion_version, max_decisions,
                                      params.seed, console)
            policy = policy_metrics(report)
            mlflow.log_metrics(finite(policy))
            metrics.update(policy)
            mlflow.log_table(_policy_table(report), "policy_values.json")
        degenerate = degeneracy(ModelEvidence.of(metrics, params.target), config.training)
        gate = promotion_gate(report, champion_version, force_promote, degenerate, config.training.min_policy_ess)
        if gate.promoted:
            MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", logged.version)
        mlflow.set_tags({"nbm.gate": gate.status, "nbm.gate_reason": gate.reason,
                         "nbm.gate_forced": str(gate.forced).lower(),
                         "nbm.champion_before": gate.champion_version or ""})
        if gate.difference is not None:
            mlflow.log_metrics(finite({"gate_dr_difference": gate.difference.value,
                                       "gate_dr_difference_low": gate.difference.ci_low,
                                       "gate_dr_difference_high": gate.difference.ci_high}))
        client = MlflowClient()
        client.set_model_version_tag(MODEL_NAME, logged.version, "nbm_gate",
                                     "not_promoted" if gate.status == "kept_champion" else gate.status)
        client.set_model_version_tag(MODEL_NAME, logged.version, "nbm_gate_reason", gate.reason)
    _summary(console, results or results_console(), logged, metrics, gate, report, config, params.target, comparison,
             params.objective)
    return TrainResult(logged, metrics, gate.promoted, gate, report, comparison)


def run_name(params: RankerParams, data: Path, rows: pd.DataFrame) -> str:
    """``train-OBJECTIVE-TARGET-DATA-DATE``: what was learned, from which data directory, up to which day (the
    latest send's, UTC) — e.g. ``train-funnel-convert-world-2026-11-01``."""
    latest = pd.Timestamp(rows["timestamp"].max())
    latest = latest.tz_localize("UTC") if latest.tzinfo is None else latest.tz_convert("UTC")
    return f"train-{params.objective}-{params.target}-{Path(data).resolve().name}-{latest:%Y-%m-%d}"


def _compare(split, params: RankerParams, catalog: pd.DataFrame, config: NbmConfig, console: Console,
             client=None) -> Comparison:
    """Every candidate objective fitted and compared (``training.compare``), each a nested MLflow run, the
    comparison a table of the parent run."""
    with console.status("comparing objectives…") as status:
        comparison = compare_objectives(
            split, params, catalog, config,
            progress=lambda objective: status.update(f"comparing objectives: fitting {objective} "
                                                     f"({len(split.train):,} training rows)…"), client=client)
    for objective, candidate in comparison.candidates.items():
        with mlflow.start_run(run_name=f"objective-{objective}-{params.target}", nested=True):
            mlflow.log_params({"objective": objective, "target": params.target,
                               "given": params.given if objective == "funnel" else ""})
            mlflow.log_metrics(finite(candidate.metrics))
            mlflow.set_tags({"nbm.degenerate": "; ".join(candidate.degenerate),
                             "nbm.chosen": str(objective == comparison.chosen).lower()})
    mlflow.log_table(comparison.table(), "objective_comparison.json")
    mlflow.set_tags({"nbm.objective_chosen": comparison.chosen, "nbm.objective_reason": comparison.reason})
    return comparison


def registered_champion(config: NbmConfig, experiment: str = "nbm") -> str | None:
    """Version of ``nbm-ranker`` behind the ``champion`` alias, or ``None``."""
    use_tracking(config, experiment)
    try:
        return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version)
    except MlflowException:
        return None


def _champion_version() -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version)
    except MlflowException:
        return None


def _evaluate_policy(source: InMemory | OnParts, config: NbmConfig, data: Path, split, artifact,
                     champion_version: str | None, max_decisions: int | None, seed: int, console: Console
                     ) -> PolicyReport:
    artifacts = {"model": artifact}
    if champion_version is not None:
        try:
            # Judged on this test window: if it learned from it (refitted), the fit its training held out.
            champion = artifacts["champion"] = load_registered("champion", held_out_before=split.test_start)
            if champion.learned_from(split.test_start):      # its value on this window is optimistic
                console.print(f"[yellow]the champion (version {champion_version}) learned from sends of this test "
                              f"window (up to {champion.trained_until}): the gate's comparison favours it[/yellow]")
                mlflow.set_tag("nbm.champion_in_sample", "true")
        except Exception as exc:  # noqa: BLE001 — an unreadable champion must not lose the new model
            console.print(f"[yellow]the champion (version {champion_version}) cannot be loaded: {exc}[/yellow]")
    history_rows = pd.concat([split.train, split.valid], ignore_index=True)
    sim_config = read_world_manifest(data)
    with console.status("reading the test window's people…"):
        chosen: PolicyData = source.policy_data(split, max_decisions, seed)
    if chosen.people is not None:
        console.print(f"off-policy evaluation on {chosen.people:,} of the test window's {chosen.of_people:,} people, "
                      f"drawn at random, with all their events ({len(chosen.dataset.events):,})")
        mlflow.set_tags({"nbm.policy_people": str(chosen.people), "nbm.policy_people_of": str(chosen.of_people)})
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("replaying the test window's decisions", total=None)
        report = evaluate_policies(
            chosen.dataset, config, history_rows, chosen.test, split.test_start, artifacts, artifact,
            max_decisions=max_decisions, partitions=chosen.partitions, seed=seed, sim_config=sim_config,
            progress=lambda k, n: bar.update(task, completed=k, total=n), shared=chosen.shared, end=chosen.end,
            reward=chosen.reward, horizon_hours=chosen.horizon_hours)
    return report


def _policy_table(report: PolicyReport) -> pd.DataFrame:
    return pd.DataFrame([v.__dict__ for v in report.values.values()])


def _summary(console: Console, results: Console, logged: LoggedModel, metrics: dict[str, float], gate: GateDecision,
             report: PolicyReport | None, config: NbmConfig, target: str, comparison: Comparison | None = None,
             trained: str | None = None) -> None:
    table = Table(title="nbm train", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name in ("train_rows", "valid_rows", "test_rows", "train_positives", "valid_positives", "best_iteration",
                 "test_auc", "test_log_loss", "test_ece", "test_ndcg_at_3", "test_positive_rate",
                 "test_mean_prediction", "seconds"):
        table.add_row(name, _figure(name, metrics.get(name, float("nan")), target))
    table.add_row("value capture (exploration)", _figure("value_capture", metrics.get("value_capture", float("nan")),
                                                         target))
    table.add_row("value concordance", _figure("value_concordance", metrics.get("value_concordance", float("nan")),
                                               target))
    table.add_row("run id", logged.run_id)
    table.add_row("model", f"{MODEL_NAME} version {logged.version}")
    table.add_row("promotion gate", "[bold red]degenerate: not promoted (below)[/bold red]" if gate.degenerate
                  else f"{'champion ← this version' if gate.promoted else 'champion kept'} ({escape(gate.reason)})")
    results.print(table)
    if comparison is not None:
        _comparison_summary(results, comparison, trained)
    if report is not None:
        print_policy_values(results, report, min_ess=config.training.min_policy_ess)
    if gate.degenerate:
        console.print(f"[bold red]nbm train: {MODEL_NAME} version {logged.version} is degenerate and was not "
                      "promoted[/bold red] (logged for inspection, tagged nbm.gate=degenerate):")
        for reason in gate.degenerate:
            console.print(f"[red]  • {escape(reason)}[/red]")
        if gate.forced:
            console.print("--force-promote does not promote a degenerate model")
        if gate.champion_version is None:
            console.print(f"[bold red]{escape(NO_SERVING)}[/bold red]")
        else:
            console.print(f"the champion stays version {gate.champion_version}")
    uri = config.mlflow_tracking_uri
    results.print(f"open the runs: {uri}" if uri.startswith(("http://", "https://"))
                  else f"open the runs: mlflow ui --backend-store-uri {uri} --host 127.0.0.1", soft_wrap=True)


def _comparison_summary(console: Console, comparison: Comparison, trained: str | None = None) -> None:
    """The comparison's table, what it ranks first and why, and — when ``--objective`` named another — that
    the model registered is the named one (``--objective auto`` trains the comparison's first)."""
    table = Table(title="objectives compared on the test window (training.compare)")
    for column in ("objective", "value capture", "exploration earning", "value concordance", "users with pairs",
                   "test AUC", "rounds", "s", "verdict"):
        table.add_column(column, justify="left" if column in ("objective", "verdict") else "right")
    for row in comparison.table().itertuples():
        verdict = "ranked first" if row.chosen else ("degenerate: " + row.degenerate if row.degenerate else "")
        if trained is not None and row.objective == trained:
            verdict = ", ".join(v for v in (verdict, "trained") if v)
        earning = f"{row.exploration_earners:,}" + (f" ({row.capture_outcome}s)" if row.capture_outcome not in
                                                     ("", "target") else "")
        table.add_row(row.objective, _figure("value_capture", row.value_capture, ""), earning,
                      _figure("value_concordance", row.value_concordance, ""),
                      f"{row.users_with_pairs:,}", _figure("test_auc", row.test_auc, ""), f"{row.best_iteration:,.0f}",
                      f"{row.seconds:.1f}", escape(verdict))
    console.print(table)
    console.print(f"comparison: {comparison.chosen} — {escape(comparison.reason)}")
    if trained is not None and trained != comparison.chosen:
        console.print(f"trained and registered: {trained} (`--objective auto` trains what the comparison ranks first)")


def _figure(name: str, value: float, target: str) -> str:
    """A summary figure as text; an undefined one as "n/a (why)" or "—", never "nan"."""
    if math.isfinite(value):
        return f"{value:,.0f}" if name.endswith(("rows", "positives", "iteration")) else f"{value:.4f}"
    why = {"test_auc": f"the test window holds one class of `{target}` only",
           "value_concordance": "too few users with sends that earned differently",
           "value_capture": "too little exploration that earned in the test window",
           "test_ndcg_at_3": "no ranking group of ≥ 2 sends with a positive"}.get(name)
    return f"n/a ({escape(why)})" if why else "—"
