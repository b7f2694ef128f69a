"""Optuna tuning of the ranker: a seeded TPE study with pruning, stored in SQLite so it can resume.

Search space (documented in ``docs/retraining.md``):

| parameter | range | scale |
| --- | --- | --- |
| ``num_leaves`` | 15 – 255 | log |
| ``learning_rate`` | 0.01 – 0.2 | log |
| ``min_data_in_leaf`` | 20 – 500 | log |
| ``feature_fraction`` | 0.5 – 1.0 | linear |
| ``bagging_fraction`` | 0.5 – 1.0 | linear |
| ``lambda_l2`` | 0.001 – 10 | log |

Each trial fits on the training window and is scored by the best validation loss of its early-stopped
booster (binary log loss, or 1 − NDCG@3 for lambdarank); a median pruner stops trials whose
validation curve falls behind. Each trial is a nested MLflow run when a run is active.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import lightgbm as lgb
import mlflow
import optuna

from training.fit import RankerParams, TimeSplit, feature_columns, lightgbm_datasets
from training.tracking import finite


def pruning_callback(trial: optuna.Trial, metric: str):
    """A LightGBM callback that reports the validation ``metric`` to Optuna and prunes when told."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        for _, name, value, higher_better in env.evaluation_result_list:
            if name == metric:
                trial.report(-value if higher_better else value, env.iteration)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {env.iteration}")

    return callback


def suggest(trial: optuna.Trial, base: RankerParams) -> RankerParams:
    return replace(
        base,
        num_leaves=trial.suggest_int("num_leaves", 15, 255, log=True),
        learning_rate=trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 20, 500, log=True),
        feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
        bagging_fraction=trial.suggest_float("bagging_fraction", 0.5, 1.0),
        lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    )


def tune(split: TimeSplit, base: RankerParams, trials: int, storage: str, study_name: str) -> tuple[RankerParams, optuna.Study]:
    """Run (or resume) the study until it holds ``trials`` finished trials; return the best parameters."""
    features = feature_columns(split.train)
    train, valid = lightgbm_datasets(split, features, base, pre_filter=False)    # one pair for every trial
    metric = "ndcg@3" if base.objective == "lambdarank" else "binary_logloss"
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=base.seed), pruner=optuna.pruners.MedianPruner(n_warmup_steps=10),
    )

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, base)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) if mlflow.active_run() else nullcontext():
            booster = lgb.train(params.lightgbm(), train, num_boost_round=params.num_boost_round, valid_sets=[valid],
                                callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False),
                                           pruning_callback(trial, metric)])
            score = booster.best_score["valid_0"][metric]
            loss = 1.0 - score if base.objective == "lambdarank" else score
            if mlflow.active_run():
                mlflow.log_params(trial.params)
                mlflow.log_metrics(finite({"valid_loss": loss, "best_iteration": float(booster.best_iteration)}))
            return loss

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    remaining = max(trials - done, 0)
    if remaining:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=remaining, catch=())
    best = study.best_trial.params
    return replace(base, **best), study

