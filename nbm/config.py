"""The one typed configuration of nbm.

Loaded once — from ``nbm.toml`` in the working directory when present, otherwise from the embedded
defaults below — and passed down explicitly. Nothing here runs at import time: :func:`load_config`
reads the file and the two environment variables it honours (``NBM_HOME`` and ``NBM_CONFIG``).

Every section is a frozen pydantic model, so a typo in ``nbm.toml`` is an error that names the key
instead of a silently ignored setting.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from nbm.errors import UsageError

CONFIG_FILE = "nbm.toml"
DEFAULT_CHANNELS = ("email", "sms", "push", "in_app", "wechat")
LIFECYCLE_STAGES = ("new", "active", "at_risk", "dormant", "loyal")
"""Stage names by code; ``loyal`` (4) exists only when ``[lifecycle] loyal_min_conversions`` > 0."""
"""Lifecycle stages by code (new 0, active 1, at_risk 2, dormant 3); the definition is :mod:`nbm.lifecycle`."""
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""``state_url`` schemes of the Redis state store (serving/state/redis.py); ``sqlite:///`` is the other."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributionConfig(_Section):
    """How outcomes without a ``decision_id`` find the send that caused them."""

    open_click_hours: float = Field(72.0, gt=0, description="window after a send for open/click")
    convert_days: float = Field(7.0, gt=0, description="window after a send for convert")


class ValidationConfig(_Section):
    """What the loader accepts."""

    future_tolerance_minutes: float = Field(
        60.0, ge=0, description="timestamps later than now + this are rejected (clock skew allowance)"
    )
    keep_unknown_messages: bool = Field(
        False, description="keep events whose message_id is not in the catalog (they are reported either way)"
    )
    max_problems_shown: int = Field(20, ge=0, description="problem rows printed by `nbm validate`")


class ChannelCaps(_Section):
    """One channel's own caps, over ``daily_cap_per_channel`` / ``weekly_cap_per_channel`` (unset: those)."""

    daily: int | None = Field(None, ge=0)
    weekly: int | None = Field(None, ge=0)


class ContactPolicyConfig(_Section):
    """Defaults of the contact policy; the decision policy enforces them."""

    daily_cap_per_channel: int = Field(1, ge=0)
    weekly_cap_per_channel: int = Field(3, ge=0)
    channel_caps: dict[str, ChannelCaps] = Field(
        default_factory=dict, description="caps of one channel over the two above, e.g. `sms = {weekly = 1}` "
        "(an SMS a week, email still 3); channels must be configured ones")
    weekly_cap_total: int = Field(5, ge=0)
    min_gap_hours: float = Field(12.0, ge=0)
    message_cooldown_days: float = Field(7.0, ge=0)
    quiet_hours_start: int = Field(21, ge=0, le=23, description="local hour at which quiet hours begin")
    quiet_hours_end: int = Field(8, ge=0, le=23, description="local hour at which quiet hours end")
    topic_caps: dict[str, ChannelCaps] = Field(
        default_factory=dict, description="sends of one topic (the catalog's `topic`), on any channel, within 24 "
        "hours (`daily`) and 7 days (`weekly`) of the send time, e.g. `promotion = {daily = 1, weekly = 2}`")
    ignored_sends: int = Field(0, ge=0, description="outcome-based suppression: a message (or topic, "
                               "`ignored_by`) sent this many times within `ignored_within_days` without an open or "
                               "a click is paused `ignored_pause_days` after the last of them; 0: off")
    ignored_within_days: float = Field(30.0, gt=0, description="the window of `ignored_sends`")
    ignored_pause_days: float = Field(30.0, gt=0, description="how long an ignored message or topic is paused")
    ignored_by: Literal["message", "topic"] = Field("message", description="what is paused: the message ignored, "
                                                    "or its whole topic")
    mandatory_messages: list[str] = Field(default_factory=list, description="transactional messages (by id): no "
                                          "cap, gap, cooldown, topic cap or suppression holds them back (they still "
                                          "count toward the caps), and they go at the decision's time, not at a slot "
                                          "moved out of quiet hours")
    mandatory_topics: list[str] = Field(default_factory=list, description="every message of these topics is "
                                        "mandatory")
    _topic_of: dict[str, str] | None = PrivateAttr(default=None)

    def with_topics(self, topic_of: dict[str, str]) -> ContactPolicyConfig:
        """This policy knowing each message's topic (the catalog's), which topic caps, topic suppression and
        mandatory topics need; set by the feature store from its catalog."""
        out = self.model_copy()
        out._topic_of = dict(topic_of)
        return out

    @property
    def topic_of(self) -> dict[str, str] | None:
        """message id → topic, when the catalog was given (:meth:`with_topics`)."""
        return self._topic_of

    def needs_topics(self) -> bool:
        return bool(self.topic_caps or self.mandatory_topics or (self.ignored_sends and self.ignored_by == "topic"))

    def mandatory(self, messages) -> np.ndarray:
        """Whether each of ``messages`` (ids) is mandatory (its id, or its topic, is listed)."""
        messages = np.asarray(messages, dtype=object)
        if not self.mandatory_messages and not self.mandatory_topics:
            return np.zeros(len(messages), dtype=bool)
        ids = set(self.mandatory_messages)
        topics = set(self.mandatory_topics)
        topic_of = self._topic_of or {}
        return np.fromiter((m in ids or topic_of.get(m) in topics for m in messages.tolist()), dtype=bool,
                           count=len(messages))

    def topic_cap(self, topic: str) -> tuple[int, int]:
        """(daily, weekly) caps of ``topic``; a cap not set: no limit."""
        own = self.topic_caps.get(topic)
        big = np.iinfo(np.int64).max
        if own is None:
            return big, big
        return (big if own.daily is None else own.daily), (big if own.weekly is None else own.weekly)

    def daily_cap(self, channel: str) -> int:
        own = self.channel_caps.get(channel)
        return self.daily_cap_per_channel if own is None or own.daily is None else own.daily

    def weekly_cap(self, channel: str) -> int:
        own = self.channel_caps.get(channel)
        return self.weekly_cap_per_channel if own is None or own.weekly is None else own.weekly


class LifecycleConfig(_Section):
    """The operator's lifecycle: what counts as activity, the stage thresholds in days, and an optional
    ``loyal`` stage. The rule itself is :mod:`nbm.lifecycle`'s, one for the features, the decisions,
    ``nbm report`` and ``nbm ab`` (docs/retraining.md, "The lifecycle is the operator's")."""

    activity_events: tuple[Literal["visit", "open", "click", "convert"], ...] = Field(
        ("visit", "click", "convert"), min_length=1,
        description="event types that count as a user's activity: a brand whose `active` means `clicked` sets "
                    "[\"click\"] (or [\"click\", \"convert\"]); sends, bounces and unsubscribes are what is done to "
                    "the person, never activity")
    new_days: float = Field(30.0, gt=0, description="a user is `new` this long after signup")
    at_risk_after_days: float = Field(21.0, gt=0, description="no activity for longer than this: `at_risk`")
    dormant_after_days: float = Field(60.0, gt=0, description="no activity for longer than this: `dormant`")
    loyal_min_conversions: int = Field(0, ge=0, description="an `active` user with at least this many conversions "
                                       "in the last `loyal_window_days` is `loyal` instead; 0: no loyal stage")
    loyal_window_days: float = Field(90.0, gt=0, description="the window of `loyal_min_conversions`")

    @field_validator("activity_events")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if self.dormant_after_days <= self.at_risk_after_days:
            raise ValueError(
                f"`dormant_after_days` ({self.dormant_after_days}) must exceed "
                f"`at_risk_after_days` ({self.at_risk_after_days})"
            )
        return self


class ArbitrationConfig(_Section):
    """Business weights: the decision ranks allowed candidates by probability × message value × weight − the
    send's expected cost; and how wide two-stage scoring searches (``top_pairs``).

    A message's weight is its own (``message_weights``) when it has one, else its topic's
    (``topic_weights``), else 1. A weight of 0 keeps a message from being chosen while it stays
    eligible (and reported); above 1 favours it.

    The expected cost of a send is ``unsubscribe_cost`` × the model's P(unsubscribe) of it (``training.risk``):
    when no candidate's value exceeds its cost, nothing is sent (reason ``below_threshold``).
    """

    message_weights: dict[str, float] = Field(default_factory=dict, description="weight per message id")
    topic_weights: dict[str, float] = Field(default_factory=dict, description="weight per topic")
    unsubscribe_cost: float | Literal["auto"] = Field(
        "auto", description="what one unsubscribe costs, in the unit of message values and revenue: `auto` (default) "
        "is what the channel earned from one person in the training log over `unsubscribe_horizon_days`; 0 "
        "sends whenever the contact policy allows (no cost)")
    unsubscribe_horizon_days: float = Field(90.0, gt=0, description="`unsubscribe_cost = \"auto\"`: the days of a "
                                            "channel's revenue per person that one unsubscribe loses")
    top_pairs: int = Field(8, ge=1, le=10_000, description="two-stage scoring: the (message, channel) pairs per "
                           "decision, best at their reference slot, that are scored at every allowed slot (at least "
                           "k + 3); more finds full enumeration's best more often, at more rows scored "
                           "(benchmarks/two_stage.py)")

    @field_validator("unsubscribe_cost")
    @classmethod
    def _cost(cls, value):
        if value != "auto" and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"must be `auto` or a finite number ≥ 0, got {value}")
        return value

    @field_validator("message_weights", "topic_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and not negative, got {bad}")
        return value

    def weights(self, message_ids, topics) -> np.ndarray:
        """The weight of each message (``message_ids`` and their ``topics``, aligned)."""
        message_ids, topics = list(message_ids), list(topics)
        return np.array([self.message_weights.get(str(m), self.topic_weights.get(str(t), 1.0))
                         for m, t in zip(message_ids, topics)], dtype=float)


class ExplorerConfig(_Section):
    """The explorers' settings; which explorer decides is named by ``--explorer`` (``nbm serve``, ``nbm recommend``)."""

    epsilon: float = Field(0.1, ge=0, le=1, description="epsilon_greedy: share of decisions that choose uniformly "
                                                         "among the allowed (message, channel) pairs")
    temperature: float = Field(0.2, gt=0, description="softmax: probability ∝ exp(value / (temperature × the largest "
                                                       "value)); 0.1 is sharp, 1 mild")
    thompson_samples: int = Field(2000, ge=1, le=100_000, description="thompson: posterior draws that estimate the "
                                                                      "propensity (standard error ≤ 0.5/√samples)")


class ActivityConfig(_Section):
    """Activity states against an ideal visit frequency: visits in the last 30 days / ideal."""

    ideal_visits_per_week: float = Field(3.0, gt=0)
    power_ratio: float = Field(1.0, gt=0, description="at least this share of the ideal: `power`")
    core_ratio: float = Field(0.4, gt=0, description="at least this share: `core`")
    casual_ratio: float = Field(0.1, gt=0, description="at least this share: `casual`; below: `low`")

    @model_validator(mode="after")
    def _ordered(self) -> ActivityConfig:
        if not self.power_ratio > self.core_ratio > self.casual_ratio:
            raise ValueError("`power_ratio` > `core_ratio` > `casual_ratio` must hold")
        return self


class FeatureConfig(_Section):
    """The feature pipeline: smoothing, candidate send slots, ranking groups."""

    PRIOR_FAMILIES: ClassVar[tuple[str, ...]] = (
        "population", "message_opens", "message_clicks", "message_converts", "user_opens",
        "user_channel_opens", "user_channel_clicks", "user_topic_opens", "user_topic_clicks", "user_tag_clicks",
        "user_hour_opens", "user_hour_visits", "user_weekday_visits",
        "segment_channel_opens", "segment_channel_clicks", "segment_topic_opens", "segment_topic_clicks")
    """The families of smoothed rates, each with its own strength (features/priors.py, docs/features.md)."""

    prior_strength: Literal["auto"] | float | dict[str, float] = Field(
        "auto", description="pseudo-sends of the smoothing of rates toward their parent's rate: \"auto\" learns one "
                            "strength per family of rates from the log (empirical Bayes); a number sets every family; "
                            "a table {family = number} sets those families and learns the others")
    segment_by: tuple[str, ...] = Field(
        (), description="user attribute columns whose combinations are segments: user x channel and user x topic "
                        "rates shrink toward the segment's rate (itself shrunk toward the population's); empty: "
                        "toward the population's")
    slot_hours: tuple[int, ...] = Field((8, 10, 12, 15, 18, 21), min_length=1,
                                        description="local hours at which a candidate send may be scheduled")
    horizon_hours: float = Field(24.0, gt=0, description="candidate slots lie within this many hours of the decision")
    group_by: Literal["decision", "user_day", "user", "day"] = Field(
        "user_day", description="ranking groups of the training set: per decision_id, per user and day, per user "
                                "(all sends to a person: which messages engage them most) or per day")

    @field_validator("slot_hours")
    @classmethod
    def _hours(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= h <= 23 for h in value) or len(set(value)) != len(value):
            raise ValueError(f"`slot_hours` must be distinct hours in 0..23, got {list(value)!r}")
        return tuple(sorted(value))

    @field_validator("prior_strength")
    @classmethod
    def _strength(cls, value: str | float | dict[str, float]) -> str | float | dict[str, float]:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.PRIOR_FAMILIES))
            if unknown:
                raise ValueError(f"`prior_strength`: unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                                 f"expected among {list(cls.PRIOR_FAMILIES)}")
            bad = {k: v for k, v in value.items() if not (np.isfinite(v) and v > 0)}
        else:
            bad = {} if value == "auto" or (np.isfinite(value) and value > 0) else {"": value}
        if bad:
            raise ValueError(f"`prior_strength` must be \"auto\", a positive number or a table of positive numbers, "
                             f"got {value!r}")
        return value

    @field_validator("segment_by")
    @classmethod
    def _segments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or any(not c or c != c.strip() for c in value):
            raise ValueError(f"`segment_by` must be distinct non-empty column names, got {list(value)!r}")
        return value


class TrainingConfig(_Section):
    """The promotion gate of `nbm train` (docs/retraining.md, "Promotion gate")."""

    min_test_auc: float = Field(0.52, ge=0.5, le=1, description="a model whose held-out (test window) AUC is NaN "
                                "or at most this is degenerate: never promoted, not even by `--force-promote`")
    min_policy_ess: float = Field(100.0, ge=0, description="a policy whose off-policy estimate rests on fewer "
                                  "effective samples is unmeasured: its SNIPS/DR are not printed as numbers, and "
                                  "the gate does not compare the challenger with the champion on them")
    dask_min_rows: int = Field(2_000_000, ge=0, description="with a Dask cluster (`dask_scheduler`), a training "
                               "window of at least this many sends is fitted with lightgbm.dask on the cluster "
                               "(binary and funnel boosters; lambdarank and the risk model stay in-process); smaller "
                               "ones in-process")
    exploration_propensity: float = Field(0.5, gt=0, le=1, description="logged sends whose propensity is below "
                                          "this were chosen by the logging policy's exploration: `nbm train` "
                                          "compares its objectives on how they rank them (docs/retraining.md, "
                                          "\"Which objective\")")


class ServiceConfig(_Section):
    """The service's door (docs/serving.md, "Security"; ``serving/guard.py``)."""

    api_keys: list[str] = Field(default_factory=list, description="API keys: `KEY` (every scope), `read:KEY` "
                                "(/recommend, /recommend_batch, /metrics, the OpenAPI) or `write:KEY` (/feedback); "
                                "none (and no api_keys_file or NBM_API_KEYS): no key asked, allowed on a loopback "
                                "--host only")
    api_keys_file: str = Field("", description="a file of API keys, one per line as in api_keys (# comments)")
    allowed_origins: list[str] = Field(default_factory=list, description="browser origins (e.g. "
                                       "https://crm.example.com) allowed to write; a write request with any other "
                                       "Origin header is refused (403); requests without one pass")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024**3,
                                description="larger request bodies are refused (413) before they are read")
    max_batch_requests: int = Field(10_000, ge=1, le=10_000, description="requests in one /recommend_batch at most "
                                    "(400 beyond; 10,000 is the contract's ceiling)")
    max_candidates: int = Field(5_000, ge=1, le=5_000, description="`candidates` of one request at most")
    max_id_length: int = Field(512, ge=16, le=512, description="characters of a user_id at most (an event_id: "
                               "at most this and 256)")
    live_refresh_seconds: float = Field(0.25, ge=0.0, le=60.0, description="how often each worker reads the users "
                                        "whose feedback or facts changed (POST /feedback, /users, a request's context) "
                                        "and featurises them again; 0: only at start (docs/serving.md, \"Live users\")")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if not o.startswith(("http://", "https://")) or o.count("/") > 3]
        if bad:
            raise ValueError(f"`allowed_origins`: expected scheme://host[:port] each, got {bad!r}")
        return value


ARMS = ("model", "rules", "random", "holdout")
"""Arms the service can serve: the ranker with its explorer, the lifecycle rules, uniformly at random, nothing."""


class ExperimentConfig(_Section):
    """The A/B test the service runs: each user's arm is a salted hash of the canonical user id."""

    name: str = Field("", description="empty: no experiment; every decision is the model's (arm `model`)")
    salt: str = Field("nbm", min_length=1, description="changing it reshuffles users between arms")
    arms: dict[str, float] = Field(
        default_factory=lambda: {"model": 0.45, "rules": 0.45, "holdout": 0.10},
        description="share of users per arm (model, rules, random, holdout); shares sum to 1")
    control: str = Field("rules", description="the arm the others are compared with by `nbm ab`")

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(ARMS))
        if unknown:
            raise ValueError(f"`arms`: unknown arm(s) {unknown}; expected among {list(ARMS)}")
        if not value or any(not 0 <= v <= 1 for v in value.values()) or abs(sum(value.values()) - 1) > 1e-9:
            raise ValueError(f"`arms`: shares must lie in [0, 1] and sum to 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _control(self) -> ExperimentConfig:
        if self.control not in self.arms:
            raise ValueError(f"`control` {self.control!r} is not one of the arms {sorted(self.arms)}")
        return self


class TriggerConfig(_Section):
    """The messages a triggered request (``context.trigger.event_type`` = this trigger's name) may answer with:
    these ids, the messages of these topics and those with these tags — and, always, the messages tagged
    ``trigger:NAME`` in the catalog."""

    messages: list[str] = Field(default_factory=list, description="message ids")
    topics: list[str] = Field(default_factory=list, description="every message of these topics")
    tags: list[str] = Field(default_factory=list, description="every message with one of these tags")


class NbmConfig(_Section):
    """The effective configuration. Build it with :func:`load_config`."""

    home: Path = Field(Path(".nbm"), description="data and state of the embedded defaults (NBM_HOME)")
    channels: tuple[str, ...] = Field(DEFAULT_CHANNELS, min_length=1)
    mlflow_tracking_uri: str = Field("", description="empty: a SQLite file under `home`")
    state_url: str = Field("", description="empty: a SQLite file under `home`; redis://… for shared state")
    dask_scheduler: str = Field("", description="empty: in-process; \"local\": a LocalCluster; else a Dask scheduler's "
                                "address, where nbm recommend decides and training sets are built (docs/deploy.md)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    attribution: AttributionConfig = AttributionConfig()
    validation: ValidationConfig = ValidationConfig()
    contact_policy: ContactPolicyConfig = ContactPolicyConfig()
    arbitration: ArbitrationConfig = ArbitrationConfig()
    explorer: ExplorerConfig = ExplorerConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    activity: ActivityConfig = ActivityConfig()
    features: FeatureConfig = FeatureConfig()
    training: TrainingConfig = TrainingConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    service: ServiceConfig = ServiceConfig()
    triggers: dict[str, TriggerConfig] = Field(default_factory=dict, description="triggered decisions: "
                                               "`[triggers.cart_abandoned] topics = [\"cart\"]` (docs/serving.md, "
                                               "\"Triggers\")")

    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or any(not c or c != c.strip() for c in value):
            raise ValueError(f"`channels` must be distinct non-empty names, got {list(value)!r}")
        return value

    @model_validator(mode="after")
    def _caps_of_known_channels(self) -> NbmConfig:
        unknown = sorted(set(self.contact_policy.channel_caps) - set(self.channels))
        if unknown:
            raise ValueError(f"`contact_policy.channel_caps`: unknown channel(s) {unknown}; configured: "
                             f"{list(self.channels)}")
        return self

    @field_validator("state_url")
    @classmethod
    def _state_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", *REDIS_SCHEMES)):
            raise ValueError(f"`state_url` must be sqlite:///PATH or redis://HOST:PORT/DB, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fill_urls(self) -> NbmConfig:
        # Derived defaults live in the object itself, so `nbm config show` prints what is really used.
        home = self.home.expanduser()
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{(home / 'mlflow.db').as_posix()}")
        if not self.state_url:
            object.__setattr__(self, "state_url", f"sqlite:///{(home / 'state.db').as_posix()}")
        return self

    def to_toml_dict(self) -> dict[str, Any]:
        """The configuration as plain TOML-serialisable values (paths as strings)."""
        data = self.model_dump(mode="json")
        return data


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> NbmConfig:
    """Load the effective configuration.

    Parameters
    ----------
    path
        A TOML file. ``None`` means ``$NBM_CONFIG`` if set, else ``./nbm.toml`` if it exists, else the
        embedded defaults.
    environ
        The environment to read ``NBM_HOME``, ``NBM_CONFIG`` and the overrides from (default ``os.environ``):
        ``NBM_HOME`` overrides ``home``, and ``NBM_KEY`` / ``NBM_SECTION__KEY`` any key of the file
        (:func:`environment_overrides`).

    Raises
    ------
    UsageError
        When the file is missing (if named explicitly), is not valid TOML, or holds an unknown key or a bad
        value; the message names the key.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is None and env.get("NBM_CONFIG"):
        path = env["NBM_CONFIG"]
    if path is None and Path(CONFIG_FILE).is_file():
        path = CONFIG_FILE
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"configuration file {str(file)!r} does not exist")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"configuration file {str(file)!r} is not valid TOML: {exc}") from exc
    overrides = environment_overrides(env)
    data = _merged(data, overrides)
    if env.get("NBM_HOME"):
        data["home"] = env["NBM_HOME"]
    try:
        return NbmConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {str(path)!r}" if path is not None else ""
        if overrides:
            where += f"{' or' if where else ' in'} the environment ({', '.join(sorted(_override_names(env)))})"
        problems = "; ".join(
            f"`{'.'.join(str(p) for p in err['loc'])}`: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise UsageError(f"invalid configuration{where}: {problems}") from exc


ENV_PREFIX = "NBM_"
ENV_NESTING = "__"


def environment_overrides(environ: dict[str, str] | os._Environ) -> dict[str, Any]:
    """The configuration keys that ``NBM_…`` variables of ``environ`` set, as a nested dict: ``NBM_STATE_URL``
    is ``state_url``, ``NBM_CONTACT_POLICY__DAILY_CAP_PER_CHANNEL`` is ``[contact_policy]
    daily_cap_per_channel`` (names in any case; lists and tables as JSON: ``NBM_CHANNELS='["email","sms"]'``).
    Variables that name no key (``NBM_DATA``, ``NBM_WORKERS``, …: the service's own) are not configuration.
    Read by pydantic-settings' environment source, so values parse as a ``BaseSettings`` would parse them."""
    from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

    class _Settings(BaseSettings, NbmConfig):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, extra="ignore",
                                          frozen=True, case_sensitive=False)

    sections = {name for name, f in NbmConfig.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)} | {"triggers"}

    class _Source(EnvSettingsSource):
        def _load_env_vars(self):           # the given environment, not necessarily the process's
            # A section is set key by key (NBM_SECTION__KEY): NBM_EXPLORER, say, is `nbm serve`'s own variable
            # for its workers (the explorer's name), not the [explorer] table.
            return {k.lower(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)
                    and k.upper()[len(ENV_PREFIX):].lower() not in sections}

    values = _Source(_Settings, case_sensitive=False, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING)()
    values.pop("home", None)                # NBM_HOME: load_config's, as before
    return values


def _override_names(environ) -> list[str]:
    """The variables of ``environ`` that :func:`environment_overrides` reads."""
    names = {f.upper() for f in NbmConfig.model_fields if f != "home"}
    return [k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper()[len(ENV_PREFIX):] in names
            or k.upper().startswith(ENV_PREFIX) and ENV_NESTING in k
            and k.upper()[len(ENV_PREFIX):].split(ENV_NESTING)[0] in names]


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys put in, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
