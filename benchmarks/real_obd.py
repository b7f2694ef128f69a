"""Real logs, not only simulated ones (issue 39): the Open Bandit Dataset through nbm, end to end.

The Open Bandit Dataset (ZOZOTOWN, Saito et al. 2021) ships a sample inside the ``obp`` wheel: 10,000
impressions each of a uniform-random policy (``random``) and of Bernoulli Thompson sampling (``bts``) on the
"all" campaign, 80 fashion items shown in 3 positions of a carousel, with each impression's click and the
logging policy's propensity. This script reads those CSVs from the wheel as a zip file (it never imports obp,
whose dependencies do not fit nbm's pins), writes each log in nbm's data contract, runs ``nbm validate``,
``nbm train``, ``nbm evaluate`` and ``nbm recommend`` on it through the CLI, and then does the classic OBD
check: the Bernoulli-TS policy's click rate estimated off-policy (nbm's IPS, SNIPS and DR) from the uniform
log, against its on-policy click rate in the bts log.

The mapping to the data contract (nbm.toml beside the tables configures the three channels):

* **item → message**: ``item_XX``, the 80 items of ``item_context.csv``; topic = ``item_feature_1`` (a
  hashed category), tags = ``item_feature_2``, ``item_feature_3`` (``item_feature_0``, a number, has no place
  in the catalog's contract and is left out); value 1 (the log holds no revenue); every message may be shown
  in every position.
* **position → channel** ``position_1`` … ``position_3``. A logged propensity is the probability of the item
  *in that position* (uniform: 1/80 in each; BTS: its position-wise probability), so nbm's action
  (message, channel) must carry the position for that propensity to be the action's. The position is not
  the policy's choice — every impression fills all three — so each impression's user consents to its own
  position's channel only: a decision chooses which item goes there, among 80, as the log's did.
* **impression → user** ``<policy>-NNNNN``, one per round. OBD has no person id: ``user_feature_0..3`` take
  only ~250 combinations (segments, not people), and merging rounds into 250 "users" would give each
  40 sends a week for nbm's frequency caps to refuse. The round's ``user_feature_0..3`` (hashed categories)
  and its 80 ``user-item_affinity_k`` become user attributes (``affinity_NN``), timezone Asia/Tokyo
  (ZOZOTOWN's market), no signup date.
* **impression → send** at the log's own timestamp (UTC, microseconds, 2019-11-24 – 11-30), with the
  round's ``propensity_score`` and ``decision_id``; **click → click** event at the same timestamp with the
  same ``decision_id`` (OBD records whether, not when, the item was clicked).

nbm's send slots are whole local hours after the decision; the log's impressions fall at any second and its
propensities cover the item and position, not a send time. nbm's off-policy evaluation sees that (almost no
logged send falls on a slot nbm offers) and matches actions on (message, channel) with the policies'
probabilities summed over their slots; it prints which action definition it used. With no conversions the
reward is the click: values are printed as clicks per decision.

The classic check uses nbm's estimators (``nbm.ope``) on the uniform log's rounds with BTS as the target
policy the way obp's own OBD example builds it: ``BernoulliTS(is_zozotown_prior=True, campaign="all")``,
i.e. Beta(alpha, beta) with the production prior of ``obp/policy/conf/prior_bts.yaml`` (read from the
wheel), its position-wise action distribution from 100,000 seeded Monte Carlo draws of the top 3 items. The
bts log's own propensities drift during the week (its Beta posteriors were updated in batches), so a second
row uses the week's empirical (item, position) frequencies of the bts log as the target instead. DR's
reward model is each (item, position)'s click rate in the uniform log, smoothed toward the position's rate
and cross-fitted over two halves (a round's own click never predicts itself).

    .venv/bin/python benchmarks/real_obd.py --wheel /tmp/obp_wheel/obp-0.4.1-py3-none-any.whl
    .venv/bin/python benchmarks/real_obd.py --download        # pip download obp==0.4.1 --no-deps first
        [--train random] [--keep DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OBP_VERSION = "0.4.1"
POLICIES = ("random", "bts")
POSITIONS = ("position_1", "position_2", "position_3")
TIMEZONE = "Asia/Tokyo"
MC_DRAWS = 100_000
PRIOR_STRENGTH = 100.0
"""Pseudo-impressions of the reward model's smoothing of an (item, position) rate toward its position's."""
NBM_TOML = f"""# the Open Bandit Dataset in nbm (benchmarks/real_obd.py): the carousel's positions are the channels
channels = {json.dumps(list(POSITIONS))}
"""


def wheel_path(args: argparse.Namespace, tmp: Path) -> Path:
    """The obp wheel: ``--wheel``, or ``pip download obp==0.4.1 --no-deps`` into ``tmp`` (``--download``)."""
    if args.wheel is not None:
        return Path(args.wheel)
    target = tmp / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", f"obp=={OBP_VERSION}", "--no-deps", "-d", str(target)],
                   check=True)
    return next(target.glob("obp-*.whl"))


def read_obd(wheel: Path, policy: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(log, items) of ``policy``'s "all" campaign, as the wheel ships them."""
    with zipfile.ZipFile(wheel) as archive:
        log = pd.read_csv(io.BytesIO(archive.read(f"obp/dataset/obd/{policy}/all/all.csv")), index_col=0)
        items = pd.read_csv(io.BytesIO(archive.read(f"obp/dataset/obd/{policy}/all/item_context.csv")), index_col=0)
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    return log.reset_index(drop=True), items


def bts_prior(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """The production prior of obp's ``BernoulliTS(is_zozotown_prior=True, campaign="all")``."""
    import yaml

    with zipfile.ZipFile(wheel) as archive:
        prior = yaml.safe_load(archive.read("obp/policy/conf/prior_bts.yaml"))["all"]
    return np.asarray(prior["alpha"], dtype=float), np.asarray(prior["beta"], dtype=float)


def contract_tables(log: pd.DataFrame, items: pd.DataFrame, policy: str) -> dict[str, pd.DataFrame]:
    """``log`` in nbm's data contract: events, messages, users (the mapping in the module's docstring)."""
    n = len(log)
    rounds = pd.Series([f"{policy}-{i:05d}" for i in range(n)], dtype=object)
    message = "item_" + log["item_id"].astype(int).map("{:02d}".format)
    channel = "position_" + log["position"].astype(int).astype(str)
    send = pd.DataFrame({"event_id": rounds + "-send", "timestamp": log["timestamp"], "user_id": rounds,
                         "event_type": "send", "message_id": message, "channel": channel, "decision_id": rounds,
                         "propensity": log["propensity_score"].astype(float)})
    clicked = log["click"].to_numpy() > 0
    click = send[clicked].assign(event_id=rounds[clicked] + "-click", event_type="click", propensity=np.nan)
    events = pd.concat([send, click], ignore_index=True).sort_values(["timestamp", "event_id"], kind="stable")
    messages = pd.DataFrame({
        "message_id": "item_" + items["item_id"].astype(int).map("{:02d}".format),
        "topic": items["item_feature_1"].astype(str).str[:8],
        "tags": [[str(a)[:8], str(b)[:8]] for a, b in zip(items["item_feature_2"], items["item_feature_3"])],
        "channels": [list(POSITIONS)] * len(items),
        "value": 1.0,
    })
    users = pd.DataFrame({"user_id": rounds, "timezone": TIMEZONE, "consent": [[c] for c in channel]})
    for k in range(4):
        users[f"user_feature_{k}"] = log[f"user_feature_{k}"].astype(str).str[:8].to_numpy()
    affinity = log[[f"user-item_affinity_{k}" for k in range(len(items))]].to_numpy(dtype=float)
    users = pd.concat([users, pd.DataFrame(affinity, columns=[f"affinity_{k:02d}" for k in range(len(items))])], axis=1)
    return {"events": events.reset_index(drop=True), "messages": messages, "users": users}


def write_contract(tables: dict[str, pd.DataFrame], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    (out / "nbm.toml").write_text(NBM_TOML)
    return out


def nbm(*argv: str) -> int:
    """``nbm ARGV`` in-process (what the CLI prints goes to this terminal); its exit code."""
    from nbm.cli import main

    print(f"\n$ nbm {' '.join(argv)}", flush=True)
    began = time.perf_counter()
    code = main(list(argv))
    print(f"(exit {code}, {time.perf_counter() - began:.1f} s)", flush=True)
    return code


# -- the classic OBD check: BTS off-policy from the uniform log, against its on-policy click rate -----------

def bts_action_distribution(alpha: np.ndarray, beta: np.ndarray, positions: int = 3, draws: int = MC_DRAWS,
                            seed: int = 0) -> np.ndarray:
    """(items, positions): P(item in position) of Bernoulli TS with a Beta(alpha, beta) posterior — the
    top ``positions`` of one Beta sample per item, ``draws`` times (obp's ``compute_batch_action_dist``)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), positions))
    for start in range(0, draws, 10_000):
        sample = rng.beta(alpha, beta, size=(min(10_000, draws - start), len(alpha)))
        top = np.argsort(-sample, axis=1)[:, :positions]
        for p in range(positions):
            counts[:, p] += np.bincount(top[:, p], minlength=len(alpha))
    return counts / draws


def empirical_distribution(log: pd.DataFrame, n_items: int) -> np.ndarray:
    """(items, positions): how often the log showed each item in each position, per position."""
    counts = np.zeros((n_items, 3))
    np.add.at(counts, (log["item_id"].to_numpy(), log["position"].to_numpy() - 1), 1.0)
    return counts / counts.sum(axis=0, keepdims=True)


def reward_model(log: pd.DataFrame, n_items: int, seed: int = 0) -> np.ndarray:
    """(rounds, items, positions): q̂ of each round, cross-fitted over two seeded halves — each half's rates
    come from the other half: (item, position) click rates smoothed toward the position's rate."""
    item, position, click = log["item_id"].to_numpy(), log["position"].to_numpy() - 1, log["click"].to_numpy(float)
    fold = np.random.default_rng(seed).permutation(len(log)) % 2
    q = np.zeros((len(log), n_items, 3))
    for k in (0, 1):
        other = fold != k
        shown, clicks = np.zeros((n_items, 3)), np.zeros((n_items, 3))
        np.add.at(shown, (item[other], position[other]), 1.0)
        np.add.at(clicks, (item[other], position[other]), click[other])
        base = clicks.sum(axis=0) / shown.sum(axis=0)
        q[fold == k] = (clicks + PRIOR_STRENGTH * base) / (shown + PRIOR_STRENGTH)
    return q


@dataclass(frozen=True)
class OffPolicy:
    target: str
    ips: tuple[float, float, float]
    snips: tuple[float, float, float]
    dr: tuple[float, float, float]
    ess: float


def off_policy(uniform: pd.DataFrame, pi: np.ndarray, q: np.ndarray, name: str, seed: int) -> OffPolicy:
    """IPS, SNIPS and DR (nbm.ope, 95 % bootstrap intervals) of the context-free ``pi`` from ``uniform``."""
    from nbm.ope import BanditLog, estimate

    rows = np.arange(len(uniform))
    item, position = uniform["item_id"].to_numpy(), uniform["position"].to_numpy() - 1
    pi_rounds = pi[:, position].T                                   # (rounds, items): π(· | the round's position)
    q_rounds = q[rows, :, position]
    log = BanditLog(uniform["click"].to_numpy(float), uniform["propensity_score"].to_numpy(float),
                    pi_rounds[rows, item], q_rounds[rows, item], (pi_rounds * q_rounds).sum(axis=1))
    w = log.weight
    ess = float(w.sum() ** 2 / (w ** 2).sum())
    values = {e: estimate(log, e, n_bootstrap=2000, seed=seed) for e in ("ips", "snips", "dr")}
    return OffPolicy(name, *((v.value, v.ci_low, v.ci_high) for v in values.values()), ess)


def binomial_interval(clicks: int, n: int) -> tuple[float, float, float]:
    """Click rate with its Wilson 95 % interval."""
    p, z = clicks / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def _v(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.5f} [{value[1]:.5f}, {value[2]:.5f}]"


def classic_check(wheel: Path, logs: dict[str, pd.DataFrame], n_items: int, seed: int) -> list[str]:
    uniform, bts = logs["random"], logs["bts"]
    alpha, beta = bts_prior(wheel)
    q = reward_model(uniform, n_items, seed)
    prior = bts_action_distribution(alpha, beta, seed=seed)
    rows = [off_policy(uniform, prior, q, "BTS, production prior (obp's)", seed),
            off_policy(uniform, empirical_distribution(bts, n_items), q, "BTS, the week's item × position mix", seed),
            off_policy(uniform, np.full((n_items, 3), 1.0 / n_items), q, "uniform (sanity: = on-policy)", seed)]
    on_bts = binomial_interval(int(bts["click"].sum()), len(bts))
    on_uniform = binomial_interval(int(uniform["click"].sum()), len(uniform))
    lines = ["", f"Classic OBD check — click rate per impression; off-policy from the uniform log ({len(uniform):,} "
             f"rounds, {int(uniform['click'].sum())} clicks), 95 % bootstrap intervals:"]
    lines.append(f"  {'target policy':40s} {'IPS':>27s} {'SNIPS':>27s} {'DR':>27s} {'ESS':>7s}")
    for r in rows:
        lines.append(f"  {r.target:40s} {_v(r.ips):>27s} {_v(r.snips):>27s} {_v(r.dr):>27s} {r.ess:7,.0f}")
    lines.append(f"  on-policy: bts log {_v(on_bts)} ({int(bts['click'].sum())} clicks in {len(bts):,}; Wilson "
                 f"95 %); uniform log {_v(on_uniform)}")
    ratio = rows[0].snips[0] / on_bts[0]
    lines.append(f"  BTS estimated / on-policy: IPS {rows[0].ips[0] / on_bts[0]:.2f}, SNIPS {ratio:.2f}, "
                 f"DR {rows[0].dr[0] / on_bts[0]:.2f} (production prior); the intervals overlap: "
                 f"{'yes' if rows[0].snips[1] <= on_bts[2] and on_bts[1] <= rows[0].snips[2] else 'no'}")
    return lines


# -- nbm's own pipeline on a log ------------------------------------------------------------------------------

def nbm_figures(home: Path, evaluation: Path) -> list[str]:
    """What nbm train logged to MLflow (AUC, gate, ESS) and what nbm evaluate wrote (AUC, reward, actions, ESS)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{(home / 'mlflow.db').as_posix()}")
    runs = mlflow.search_runs(experiment_names=["nbm"], filter_string="attributes.run_name LIKE 'train-%'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    lines = []
    if len(runs):
        run = runs.iloc[0]
        get = lambda key: float(run.get(key, float("nan")))  # noqa: E731
        at = lambda key: pd.Timestamp(run.get(key)).strftime("%m-%d %H:%M")  # noqa: E731
        lines.append(f"  nbm train: test AUC {get('metrics.test_auc'):.4f} on {get('metrics.test_rows'):,.0f} sends "
                     f"({get('metrics.train_rows'):,.0f} train before {at('tags.nbm.valid_start')}, "
                     f"{get('metrics.valid_rows'):,.0f} valid, test from {at('tags.nbm.test_start')}); best iteration "
                     f"{get('metrics.best_iteration'):,.0f}; gate: {run.get('tags.nbm.gate')} "
                     f"({run.get('tags.nbm.gate_reason')}); ESS model {get('metrics.policy_model_ess'):,.0f}, uniform "
                     f"{get('metrics.policy_uniform_ess'):,.0f}; actions with slot: "
                     f"{'yes' if get('metrics.policy_actions_with_slot') == 1 else 'no'}")
    if evaluation.is_file():
        result = json.loads(evaluation.read_text())
        number = lambda v, style="{:.5f}": "—" if v is None else style.format(v)  # noqa: E731
        policies = "; ".join(f"{k} IPS {number(v['ips'])}, SNIPS {number(v['snips'])}, DR {number(v['dr'])} "
                             f"(ESS {number(v['ess'], '{:,.0f}')})" for k, v in result["policies"].items())
        lines.append(f"  nbm evaluate: test AUC {number(result['metrics'].get('test_auc'), '{:.4f}')}, "
                     f"{result['decisions']:,} decisions, reward: {result['reward_unit']}, actions matched on "
                     f"{result['actions']} (logged sends with an eligible (message, channel): "
                     f"{result['logged_sends_eligible']['pair']:,}, on an nbm slot: "
                     f"{result['logged_sends_eligible']['slot']:,}); logged {number(result['logged_mean_reward'])}; "
                     f"{policies}")
    return lines


def run_pipeline(data: Path, home: Path, policy: str, now: pd.Timestamp) -> list[str]:
    os.environ["NBM_HOME"] = str(home)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    config = str(data / "nbm.toml")
    evaluation = home / f"evaluate-{policy}.json"
    train = nbm("train", "--data", str(data), "--config", config, "--target", "click")
    nbm("evaluate", "--data", str(data), "--config", config, "--model", "models:/nbm-ranker/1",
        "--out", str(evaluation))
    nbm("recommend", "--data", str(data), "--config", config, "--model", "models:/nbm-ranker/1",
        "--now", now.isoformat(), "--out", str(home / f"recommend-{policy}.jsonl"))
    lines = ["", f"nbm on the {policy} log (nbm train exit {train}):", *nbm_figures(home, evaluation)]
    answers = [json.loads(line) for line in (home / f"recommend-{policy}.jsonl").read_text().splitlines()]
    shown = [i["message_id"] for a in answers for i in a["items"]]
    if shown:
        top = pd.Series(shown).value_counts()
        lines.append(f"  nbm recommend: {len(answers):,} decisions, {len(shown):,} items; most chosen "
                     + ", ".join(f"{m} {c:,}" for m, c in top.head(3).items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", type=Path, help=f"an obp-{OBP_VERSION} wheel (read as a zip file)")
    source.add_argument("--download", action="store_true", help=f"pip download obp=={OBP_VERSION} --no-deps first")
    parser.add_argument("--train", default="random", help="logs to run nbm train/evaluate/recommend on "
                                                         "(comma-separated among random, bts; default random)")
    parser.add_argument("--keep", type=Path,
                        help="write the data directories and nbm's state here (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trained = [p.strip() for p in args.train.split(",") if p.strip()]
    if not set(trained) <= set(POLICIES):
        parser.error(f"--train: expected among {', '.join(POLICIES)}, got {args.train!r}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep: {args.keep} is not empty (its MLflow store would hold an earlier run's models)")
    # 84 user attributes (4 features, 80 affinities) make the training set a wide frame, into which
    # features/pipeline.py inserts the id columns one by one: pandas warns once per column, to no effect.
    warnings.filterwarnings("ignore", category=pd.errors.PerformanceWarning)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        wheel = wheel_path(args, Path(tmp))
        logs, summary = {}, []
        for policy in POLICIES:
            log, items = read_obd(wheel, policy)
            logs[policy] = log
            data = write_contract(contract_tables(log, items, policy), root / f"obd-{policy}")
            print(f"\n{policy}: {len(log):,} impressions, {int(log['click'].sum())} clicks, "
                  f"{log['timestamp'].min()} – {log['timestamp'].max()} → {data}")
            nbm("validate", "--data", str(data), "--config", str(data / "nbm.toml"), "--now", "2026-12-07T00:00:00Z")
        for policy in trained:
            now = logs[policy]["timestamp"].max().ceil("h")
            summary += run_pipeline(root / f"obd-{policy}", root / f"home-{policy}", policy, now)
        summary += classic_check(wheel, logs, len(items), args.seed)
    print("\n".join(summary))
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
