"""The ``nbm`` command line (DESIGN.md, "CLI contract") — the one composition root.

Every command exits 0 on success, 1 when it finished but found problems in the input, and 2 on unusable
input or a usage error, printing the reason on stderr without a traceback (``--debug`` shows it).
Commands that need a later stage (``training``, ``serving``, ``experiments``) import it inside the
command, so ``nbm --help`` stays fast and the core never depends on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nbm import __version__, telemetry
from nbm.errors import NbmError
from nbm.policy.explore import EXPLORERS

EXPLORER_NAMES = tuple(sorted(EXPLORERS))

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.ab:
        return _cmd_simulate_ab(args)
    from nbm.commands.simulate import run_simulate

    if args.days is None:
        args.days = 60
    return run_simulate(args)


def _cmd_simulate_ab(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from nbm.config import ExperimentConfig, load_config
    from nbm.errors import UsageError

    if args.data is None:
        raise UsageError("`--ab` needs `--data DIR`: a world written by `nbm simulate`, with a trained model")
    config = load_config(args.config)
    experiment = config.experiment
    if args.experiment:
        experiment = experiment.model_copy(update={"name": args.experiment})
    elif not experiment.name:
        experiment = ExperimentConfig(name="ab")
    config = config.model_copy(update={"experiment": experiment})
    days = 14 if args.days is None else args.days
    from serving.ab_simulation import run_ab_simulation

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"A/B test {experiment.name!r}: {days} days", total=days)
        run = run_ab_simulation(args.data, args.out, config, days, args.model, args.explorer, args.seed,
                                progress=lambda done, total: bar.update(task, completed=done))
    shares = ", ".join(f"{arm} {share:.0%}" for arm, share in experiment.arms.items())
    print(f"A/B test {run.experiment!r} ({shares}) over {run.days} days: {run.decisions:,} decisions, "
          f"{run.sends:,} sends, written to {run.out}", file=sys.stderr)
    for arm, row in run.truth.items():
        print(f"  {arm:8s} {row['users']:6,} users  {row['sends']:7,} sends  true value per user "
              f"{row['true_value_per_user']:.4f}", file=sys.stderr)
    print(f"analyse it: nbm ab --data {run.out} --experiment {run.experiment}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from rich.console import Console

    from nbm.commands.options import results_console
    from nbm.config import load_config
    from serving.registry import load_model
    from training.evaluate import evaluate_model, print_evaluation, write_evaluation

    config = load_config(args.config)
    loaded = load_model(args.model, config)
    console = Console(stderr=True)
    result = evaluate_model(args.data, config, loaded.artifact, f"{args.model} (version {loaded.version})",
                            valid_days=args.valid_days, test_days=args.test_days,
                            max_decisions=args.max_decisions or None, seed=args.seed,
                            console=console, held_out=loaded.held_out)
    print_evaluation(results_console(), result, min_ess=config.training.min_policy_ess)
    if args.out is not None:
        write_evaluation(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _cmd_ab(args: argparse.Namespace) -> int:
    from experiments.ab_command import run_ab
    from nbm.config import ExperimentConfig, load_config
    from nbm.errors import UsageError

    config = load_config(args.config)
    if args.shares:
        try:
            arms = {k.strip(): float(v) for k, v in (part.split("=") for part in args.shares.split(","))}
            design = ExperimentConfig(name=args.experiment, salt=config.experiment.salt, arms=arms,
                                      control=args.control or ("rules" if "rules" in arms else next(iter(arms))))
        except ValueError as error:   # a malformed pair, or pydantic's message naming the field
            raise UsageError(f"`--shares`: expected ARM=SHARE,… summing to 1, got {args.shares!r} ({error})") from error
        config = config.model_copy(update={"experiment": design})
    return run_ab(args.data, args.experiment, args.out, config, by=args.by, control=args.control)


def _featuriser(dataset, config):
    """The features' featuriser of ``dataset`` (``experiments.profiles.Featuriser``): experiments may not import
    features, so the composition root hands it to the profiles and the audience report."""
    from features.compute import Candidates
    from features.pipeline import FeatureStore

    store = FeatureStore.build(dataset, config)
    return lambda *columns: store.featurise(Candidates(*columns))


def _cmd_report(args: argparse.Namespace) -> int:
    from experiments.audience_command import run_report
    from nbm.commands.options import parse_time
    from nbm.config import load_config

    return run_report(args.data, args.out, load_config(args.config), start=parse_time(args.start, "--from"),
                      end=parse_time(args.end, "--to"), by=args.by, featuriser_for=_featuriser)


def _cmd_profiles(args: argparse.Namespace) -> int:
    from experiments.profiles import run_profiles
    from nbm.commands.options import parse_time
    from nbm.config import load_config

    return run_profiles(args.data, args.out, load_config(args.config), parse_time(args.now, "--now"), _featuriser)


def _cmd_validate(args: argparse.Namespace) -> int:
    from nbm.commands.validate import run_validate

    from features.parts import event_parts

    if not event_parts(args.data):
        return run_validate(args)
    # A log in parts: each part validated by a worker of the cluster (dask_scheduler), else here one at a time.
    from features.parts import validate_parts
    from nbm.cluster import dask_client
    from nbm.config import load_config

    with dask_client(load_config(args.config).dask_scheduler) as client:
        return run_validate(args, lambda data, config, now: validate_parts(data, config, now, client))


def _cmd_train(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # nbm sends nothing anywhere by default: MLflow's usage telemetry is off unless the user turned it on.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from nbm.config import load_config
    from training.fit import RankerParams
    from training.job import run_training

    config = load_config(args.config)
    if args.if_missing:
        from training.job import registered_champion

        version = registered_champion(config, args.experiment)
        if version is not None:
            print(f"nbm train: a champion is registered (nbm-ranker version {version}); nothing to do", file=sys.stderr)
            return 0
    # By default the objective is the one the comparison ranks first (``auto``); without the comparison, funnel.
    objective = args.objective or ("funnel" if args.no_compare else "auto")
    params = RankerParams(objective=objective, target=args.target, seed=args.seed)
    result = run_training(Path(args.data), config, params, experiment=args.experiment,
                          valid_days=args.valid_days, test_days=args.test_days, trials=args.trials,
                          force_promote=args.force_promote, max_decisions=args.max_decisions or None,
                          evaluate_policy=not args.no_policy_eval, compare=not args.no_compare)
    # A degenerate model is logged but never promoted: the run finished and found a problem (exit 1).
    return 1 if result.gate is not None and result.gate.degenerate else 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    import os

    from nbm.errors import UsageError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import pandas as pd
    from rich.console import Console

    from nbm.commands.options import parse_time
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from serving.batch_scoring import read_user_list, recommend_all
    from serving.registry import load_model

    config = load_config(args.config)
    now = parse_time(args.now, "--now") or pd.Timestamp.now(tz="UTC")
    if not 1 <= args.k <= 10:
        raise UsageError(f"`--k` must lie in 1..10, got {args.k}")
    console = Console(stderr=True)
    from features.parts import Tables, event_parts
    from nbm.cluster import dask_client, describe

    from serving.batch_output import BatchOutput

    users = read_user_list(args.users) if args.users else None
    output = BatchOutput(args.out, args.format)
    if event_parts(args.data):              # out of core: every worker reads its own part of the events
        if not config.dask_scheduler:
            raise UsageError(f"the events of {str(args.data)!r} are parts (events/*.parquet): deciding on them needs a "
                             "Dask cluster (`dask_scheduler = \"local\"` or a scheduler's address; docs/deploy.md)")
        from serving.batch_scoring import recommend_parts

        with console.status("loading the tables and the model…"):
            tables = Tables.read(args.data, config, now=now)
            loaded = load_model(args.model, config)
        with dask_client(config.dask_scheduler) as client, console.status("deciding…") as status:
            console.print(describe(client), highlight=False, soft_wrap=True)
            warn = lambda last: _warn_past_the_data("recommend", now, None, given=args.now is not None,  # noqa: E731
                                                    last=pd.Timestamp(last, tz="UTC"))
            summary = recommend_parts(client, args.data, tables, config, loaded.artifact, loaded.version, now, output,
                                      users, args.k, args.explorer, args.threshold, args.seed, on_plan=warn,
                                      progress=lambda k, n: status.update(f"deciding… {k:,}/{n:,} users"))
    else:
        with console.status("loading the data and the model…"):
            dataset, _ = load_dataset(args.data, config, now=now)
            loaded = load_model(args.model, config)
        _warn_past_the_data("recommend", now, dataset.events, given=args.now is not None)
        with dask_client(config.dask_scheduler) as client, console.status("deciding…") as status:
            if client is not None:
                console.print(describe(client), highlight=False, soft_wrap=True)
            summary = recommend_all(dataset, config, loaded.artifact, loaded.version, now, output, users, args.k,
                                    args.explorer, args.threshold, args.seed,
                                    progress=lambda k, n: status.update(f"deciding… {k:,}/{n:,} users"), client=client)
    reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(summary.reasons.items())) or "none"
    from nbm.commands.options import results_console

    results_console().print(f"{summary.decisions:,} decisions as of {now.isoformat()} (model version "
                            f"{loaded.version}): {summary.with_items:,} with items ({summary.items:,} items); nothing — "
                            f"{reasons}. Written to {output.describe()}", highlight=False)      # a result: on stdout
    return 0


PAST_THE_DATA_DAYS = 1.0
"""``--now`` later than the last event by more than this (days) gets a warning: decisions from a stale history."""


def _warn_past_the_data(command: str, now, events, given: bool, last=None) -> None:
    """Warn on stderr when ``now`` lies more than :data:`PAST_THE_DATA_DAYS` after the last event of ``events``
    (or ``last``, a log in parts): every user then looks less active than they were when the data ends (stages
    drift to at_risk and dormant, recent contacts and fatigue vanish), which is rarely what a batch run over an old
    export means."""
    if last is None:
        if not len(events):
            return
        last = events["timestamp"].max()
    days = (now - last).total_seconds() / 86_400
    if days > PAST_THE_DATA_DAYS:
        source = "`--now`" if given else "`--now` (not given: the wall clock)"
        print(f"nbm {command}: warning: {source} {now.isoformat()} is {days:.1f} days after the data's last event "
              f"({last.isoformat()}): users look {days:.0f} days less active than the data shows; to decide as of "
              f"the data's end, pass `--now {last.isoformat()}`", file=sys.stderr)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from nbm.config import load_config
    from nbm.errors import UnusableInputError, UsageError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    config = load_config(args.config)
    if args.data is None:
        args.data = config.home.expanduser() / "demo"
        if not args.data.is_dir():
            raise UnusableInputError(f"`--data` not given, and the embedded demo world {str(args.data)!r} does not exist: "
                                     "pass --data DIR, or build the demo with `make run` (or `nbm simulate --out "
                                     f"{args.data}` and `nbm train --data {args.data}`)")
    if not Path(args.data).is_dir():
        raise UnusableInputError(f"`--data`: {str(args.data)!r} is not a directory")
    if not 1 <= args.workers <= 64:
        raise UsageError(f"`--workers` must lie in 1..64, got {args.workers}")
    from serving.guard import load_keys, require_keys

    try:
        refusal = require_keys(args.host, load_keys(config))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if refusal:
        raise UsageError(refusal)
    from serving.launch import port_free, serve

    if not port_free(args.host, args.port):   # before anything is written: a running service's files stay its own
        raise UsageError(f"`--port`: {args.host}:{args.port} is already in use (another `nbm serve`?); "
                         "choose another port or stop that server")
    from serving.registry import resolve_version

    if args.model.startswith("models:/") and resolve_version(args.model, config) is None:
        raise UnusableInputError(f"no registered model at {args.model} in {config.mlflow_tracking_uri} "
                                 "(train one with `nbm train`)")
    return serve(args.data, args.model, host=args.host, port=args.port, workers=args.workers, explorer=args.explorer,
                 threshold=args.threshold, reload_seconds=args.reload_seconds, home=config.home,
                 config_path=args.config, example=args.example_user)


def _cmd_export_log(args: argparse.Namespace) -> int:
    from nbm.commands.options import parse_time
    from nbm.config import load_config
    from serving.export import export_log
    from serving.state import open_state

    config = load_config(args.config)
    since = parse_time(args.since, "--since")
    users = messages = links = None
    if args.data is not None:
        from nbm.dataset import load_dataset

        dataset = load_dataset(args.data, config)[0]
        users, messages, links = dataset.users, dataset.messages, dataset.links
    counts = export_log(open_state(config.state_url), args.out, since, args.format, users, messages, links)
    print(f"wrote {counts['decisions']:,} decisions, {counts['events']:,} feedback events, the facts of "
          f"{counts['users']:,} users and {counts['messages']:,} catalog changes to {args.out} "
          f"({counts['propensities_filled']:,} reported sends given the propensity their answer had)", file=sys.stderr)
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from nbm.commands.config_show import run_config_show

    return run_config_show(args)


def _common_options(parser: argparse.ArgumentParser, config_default: object, debug_default: object) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, default=config_default,
                        help="configuration file (default: ./nbm.toml if present)")
    parser.add_argument("--debug", action="store_true", default=debug_default, help="show tracebacks of errors")
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also the libraries' own INFO logs and download bars (MLflow, Optuna, Alembic, Dask, "
                             "BentoML)")
    return parser


QUIET_LOGGERS = ("mlflow", "optuna", "alembic", "urllib3", "distributed", "bentoml")
"""Libraries whose INFO lines (run tracking, trials, schema migrations, a cluster's start) are silenced unless
``--verbose``: nbm's own output says what happened."""


def _quiet_libraries(verbose: bool) -> None:
    """Unless ``verbose``: the libraries' loggers at WARNING and MLflow's download bars off (one output policy:
    results on stdout, nbm's logs and progress on stderr, nothing else)."""
    if verbose:
        return
    import logging
    import os

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow sets its loggers' level when it is imported (later, lazily): from these variables, also in the
    # processes nbm starts (the service's workers).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    top = _common_options(argparse.ArgumentParser(add_help=False), None, False)
    # Sub-commands accept the same options after their name; SUPPRESS keeps a value given before it.
    common = _common_options(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS, argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="nbm", parents=[top],
        description="nbm — the next best message for each customer, or nothing now.",
    )
    parser.add_argument("--version", action="version", version=f"nbm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser("simulate", parents=[common], help="write a synthetic CRM world in the data contract",
                         description="Write a simulated CRM world (events, messages, users, links) with ground truth.")
    sim.add_argument("--out", type=Path, required=True, help="directory to write the tables to")
    sim.add_argument("--users", type=_positive_int, default=10_000, help="people in the world (default 10000)")
    sim.add_argument("--days", type=_positive_int, default=None,
                     help="days of logged history (default 60); with --ab, days of the experiment (default 14)")
    sim.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same world")
    sim.add_argument("--preset", metavar="NAME",
                     help="a world that differs from the default in structure: sparse, taste, timing, lifecycle, "
                          "churn (docs/simulator.md); prints the nbm configuration that fits it")
    sim.add_argument("--start", help="first instant of the period, ISO-8601 (default: ends 2026-11-01)")
    sim.add_argument("--epsilon", type=_share, default=0.1, help="exploration share of the logging policy")
    sim.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="file format")
    sim.add_argument("--messy", action="store_true",
                     help="inject duplicates, late rows and malformed rows (manifest in injected.json)")
    sim.add_argument("--ab", action="store_true",
                     help="run an A/B test in the world of --data through the service's decision path "
                          "(arms from the [experiment] configuration) and write the extended data to --out")
    sim.add_argument("--data", type=Path, help="with --ab: a world written by `nbm simulate` (and trained on)")
    sim.add_argument("--experiment", help="with --ab: the experiment's name (default: the configured one, or `ab`)")
    sim.add_argument("--model", default="models:/nbm-ranker@champion", help="with --ab: the model arm's model")
    sim.add_argument("--explorer", default="epsilon_greedy", help="with --ab: the model arm's explorer")
    sim.set_defaults(handler=_cmd_simulate)

    val = sub.add_parser("validate", parents=[common], help="report the bad rows of a data directory",
                         description="Check a data directory against the data contract. "
                                     "Exit 0: clean; 1: problems, data usable; 2: unusable.")
    val.add_argument("--data", type=Path, required=True, help="directory with events, messages, users (links)")
    val.add_argument("--now", help="validation time for future timestamps, ISO-8601 (default: now)")
    val.add_argument("--json", type=Path, help="also write the full report as JSON here")
    val.add_argument("--show", type=int, default=None, help="problem rows to print (default from configuration)")
    val.set_defaults(handler=_cmd_validate)

    train = sub.add_parser("train", parents=[common], help="train the ranker, log it to MLflow and register it",
                           description="Features, time split, LightGBM with early stopping, calibration; "
                                       "an MLflow run and a registered version of nbm-ranker (alias challenger).")
    train.add_argument("--data", type=Path, required=True, help="data directory (the data contract)")
    train.add_argument("--experiment", default="nbm", help="MLflow experiment name (default nbm)")
    train.add_argument("--seed", type=int, default=0, help="seed of LightGBM's sampling")
    train.add_argument("--objective", choices=("funnel", "binary", "lambdarank", "auto"), default=None,
                       help="funnel (P(click) × P(convert | click) of the message), binary, lambdarank, or auto "
                            "(the default): the one that ranks the test window's logged exploration best "
                            "(docs/retraining.md, 'Which objective')")
    train.add_argument("--no-compare", action="store_true",
                       help="skip fitting the other objectives for the comparison logged to MLflow (faster); the "
                            "objective is then funnel unless --objective names one")
    train.add_argument("--target", choices=("open", "click", "convert"), default="convert",
                       help="outcome whose probability the model predicts (default convert)")
    train.add_argument("--valid-days", type=_positive_float, default=None,
                       help="validation window (days; default: a quarter of the log's span, at most 7)")
    train.add_argument("--test-days", type=_positive_float, default=None,
                       help="test window (days; default: a quarter of the log's span, at most 7)")
    train.add_argument("--trials", type=int, default=0,
                       help="Optuna trials before the final fit (0: defaults); the study resumes if interrupted")
    train.add_argument("--if-missing", action="store_true", help="do nothing when a champion is already registered")
    train.add_argument("--force-promote", action="store_true",
                       help="make this version the champion whatever the DR comparison says (logged as forced); "
                            "a degenerate model is never promoted")
    train.add_argument("--max-decisions", type=int, default=50_000,
                       help="logged decisions of the test window replayed for the policy value (a seeded sample "
                            "when there are more; default 50000; 0: all)")
    train.add_argument("--no-policy-eval", action="store_true",
                       help="skip the off-policy evaluation (then the gate promotes only a first model or --force-promote)")
    train.set_defaults(handler=_cmd_train)

    rec = sub.add_parser("recommend", parents=[common], help="decide for every user as of a time, without a server",
                         description="Batch scoring: the service's decision for every user (or the listed ones) "
                                     "as of --now, with the contact history from the events in --data. "
                                     "One JSON line per decision, in the /recommend answer's shape plus `now`.")
    rec.add_argument("--data", type=Path, required=True, help="data directory (the data contract)")
    rec.add_argument("--model", default="models:/nbm-ranker@champion",
                     help="models:/NAME@ALIAS, models:/NAME/VERSION or an artifact directory "
                          "(default models:/nbm-ranker@champion)")
    rec.add_argument("--now", help="decision time, ISO-8601 (default: the clock; a time over a day after the data's "
                                   "last event gets a warning)")
    rec.add_argument("--users", type=Path, help="only these users: one id per line, or CSV/Parquet with user_id")
    rec.add_argument("--k", type=int, default=1, help="items per decision, 1..10 (default 1)")
    rec.add_argument("--explorer", default="greedy", choices=EXPLORER_NAMES, help="how to choose (default greedy)")
    rec.add_argument("--threshold", type=float, default=0.0, help="send nothing below this expected value")
    rec.add_argument("--seed", type=int, default=0, help="seed of the explorer's draws")
    rec.add_argument("--out", required=True,
                     help="FILE (JSON lines; Parquet when it ends .parquet), or DIR/ (a trailing slash or an existing "
                          "directory): one partition per file, part-00000.jsonl…, written by the Dask workers on a "
                          "cluster, then _SUCCESS")
    rec.add_argument("--format", choices=("jsonl", "parquet"),
                     help="jsonl or parquet (default: by --out's suffix; jsonl for a directory)")
    rec.set_defaults(handler=_cmd_recommend)

    ev = sub.add_parser("evaluate", parents=[common], help="a model's offline metrics and off-policy value",
                        description="Score a candidate model on the last --test-days of the data (AUC, log loss, "
                                    "calibration, NDCG) and estimate its policy's value from the logged decisions "
                                    "(SNIPS, doubly robust, IPS, bootstrap 95% intervals) beside the baselines.")
    ev.add_argument("--data", type=Path, required=True, help="data directory (the data contract)")
    ev.add_argument("--model", default="models:/nbm-ranker@champion",
                    help="models:/NAME@ALIAS, models:/NAME/VERSION or an artifact directory")
    ev.add_argument("--valid-days", type=_positive_float, default=None,
                    help="validation window before the test window, as `nbm train` splits (days; default: a quarter "
                         "of the log's span, at most 7)")
    ev.add_argument("--test-days", type=_positive_float, default=None,
                    help="days at the end of the log to evaluate on (default: a quarter of the log's span, at most 7)")
    ev.add_argument("--max-decisions", type=int, default=50_000, help="logged decisions replayed at most (0: all)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the explorers' draws")
    ev.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    ev.set_defaults(handler=_cmd_evaluate)

    ab = sub.add_parser("ab", parents=[common], help="A/B analysis of a decision log",
                        description="Per arm of an experiment: users, decisions, sends, per-user rates, revenue, "
                                    "guardrails; differences with 95% intervals, CUPED, SRM, always-valid "
                                    "sequential p-values, segments with Benjamini–Hochberg; an HTML report.")
    ab.add_argument("--data", type=Path, required=True, help="data directory with a decisions table")
    ab.add_argument("--experiment", required=True, help="the experiment's name (decisions.experiment)")
    ab.add_argument("--out", type=Path, help="output directory (default ./ab-NAME)")
    ab.add_argument("--by", help="also segment by this users column")
    ab.add_argument("--control", help="the arm the others are compared with (default: configured, or rules/holdout)")
    ab.add_argument("--shares", help="the design's expected shares, e.g. model=0.45,rules=0.45,holdout=0.1 (default: "
                                     "the configured [experiment] of that name, else the default design)")
    ab.set_defaults(handler=_cmd_ab)

    rep = sub.add_parser("report", parents=[common], help="audience and lifecycle report (HTML + CSV/JSON)",
                         description="Who the customers are, where they are in their lifecycle, how hard each channel "
                                     "is pressed, what each stage yields: one self-contained HTML file and a "
                                     "long-format CSV/JSON of every figure in it, per week.")
    rep.add_argument("--data", type=Path, required=True, help="data directory (the data contract)")
    rep.add_argument("--out", type=Path, help="the HTML file (default ./report.html; CSV and JSON beside it)")
    rep.add_argument("--from", dest="start", help="first instant of the period, ISO-8601 (default: the data's first week)")
    rep.add_argument("--to", dest="end", help="end of the period, ISO-8601 (default: the data's end)")
    rep.add_argument("--by", help="also segment by this users column")
    rep.set_defaults(handler=_cmd_report)

    prof = sub.add_parser("profiles", parents=[common], help="one row per customer: stage, state, engagement, preferences",
                          description="The 'know your customer' export: per user, the lifecycle stage, activity state, "
                                      "engagement score (explicit and implicit parts), preferred channel, hour and "
                                      "top topics with their smoothed rates, last contact and consent, all as the "
                                      "features compute them (docs/report.md, 'Customer profiles').")
    prof.add_argument("--data", type=Path, required=True, help="data directory (the data contract)")
    prof.add_argument("--now", help="the profiles' time, ISO-8601 (default: just after the last event, not the clock)")
    prof.add_argument("--out", type=Path, required=True, help="output file: Parquet or CSV, by its suffix")
    prof.set_defaults(handler=_cmd_profiles)

    srv = sub.add_parser("serve", parents=[common], help="start the scoring service (BentoML) on 127.0.0.1:3000",
                         description="/recommend, /recommend_batch, /feedback, /users, /messages, /healthz, /readyz, "
                                     "/metrics.")
    srv.add_argument("--data", type=Path, help="data directory: the users, catalog and history served (default: "
                                                "the embedded demo world, NBM_HOME/demo, that `make run` builds)")
    srv.add_argument("--model", default="models:/nbm-ranker@champion",
                     help="models:/NAME@ALIAS, models:/NAME/VERSION or an artifact directory")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other than loopback needs API keys: "
                                                      "docs/serving.md, \"Security\")")
    srv.add_argument("--port", type=int, default=3000, help="port (default 3000)")
    srv.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    srv.add_argument("--explorer", default="epsilon_greedy", choices=EXPLORER_NAMES,
                     help="how to choose among candidates (default epsilon_greedy)")
    srv.add_argument("--threshold", type=float, default=0.0, help="send nothing below this expected value")
    srv.add_argument("--reload-seconds", type=float, default=60.0,
                     help="how often to check whether the registry alias moved (default 60)")
    srv.add_argument("--example-user", help=argparse.SUPPRESS)     # default: a user of --data with a consent
    srv.set_defaults(handler=_cmd_serve)

    exp = sub.add_parser("export-log", parents=[common], help="the service's decision log and feedback as a data directory",
                         description="Writes decisions and events (the data contract) from the state store, for the "
                                     "next training and its off-policy evaluation.")
    exp.add_argument("--out", type=Path, required=True, help="output directory")
    exp.add_argument("--since", help="only rows at or after this time (ISO-8601)")
    exp.add_argument("--data", type=Path, help="the data directory whose users and messages tables the users and "
                                               "messages posted to the service are merged into (the written tables "
                                               "then hold every user and message)")
    exp.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    exp.set_defaults(handler=_cmd_export_log)

    cfg = sub.add_parser("config", parents=[common], help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    show = cfg_sub.add_parser("show", parents=[common], help="print the effective configuration as TOML")
    show.set_defaults(handler=_cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    telemetry.switch_off()          # nbm never calls out (nbm/telemetry.py), nor do the processes it starts
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, a usage error exits 2
        return int(exc.code or 0)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    _quiet_libraries(getattr(args, "verbose", False))
    try:
        return handler(args)
    except NbmError as exc:
        if args.debug:
            raise
        print(f"nbm {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nbm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — the contract: a reason on stderr, never a traceback
        if args.debug:
            raise
        print(f"nbm {args.command}: unexpected error: {type(exc).__name__}: {exc} "
              "(this is a bug; rerun with --debug for the traceback)", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
