"""The scoring artifact: LightGBM booster + calibrator + feature list + library versions, in one object.

It lives in the core so that the service, batch scoring and offline evaluation load and score it without
MLflow, Optuna or scikit-learn. ``score(frame)`` returns calibrated probabilities (of the artifact's
``target``, a conversion by default): the decision policy weighs them by message value and may decide to
send nothing, so they must be probabilities, not ranks.

Scoring goes through the booster compiled to machine code when :meth:`ScoringArtifact.compile` made it
(``nbm.compiled``: the same raw scores, 5–8× faster), else through ``Booster.predict`` on a float32 numpy
matrix — never the scikit-learn wrapper on a DataFrame (0.6–0.8 ms more per call).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from nbm.arrays import Spread
from nbm.compiled import CompiledForest, compile_booster

BOOSTER_FILE, META_FILE, RISK_FILE = "booster.txt", "artifact.json", "risk.txt"


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw booster scores to probabilities: piecewise-linear through ``(x, y)``.

    Isotonic regression (fitted in ``training``) exports exactly this; a sigmoid is stored as a dense grid.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) < 1:
            raise ValueError(f"`x` and `y` must have the same positive length, got {len(self.x)} and {len(self.y)}")
        if np.any(np.diff(self.x) < 0):
            raise ValueError("`x` must be sorted")
        if np.any((np.asarray(self.y) < 0) | (np.asarray(self.y) > 1)):
            raise ValueError("`y` must be probabilities in [0, 1]")

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    @classmethod
    def identity(cls) -> Calibrator:
        return cls((0.0, 1.0), (0.0, 1.0))


@dataclass(frozen=True)
class FollowUp:
    """The second step of a funnel: P(target | the booster's outcome) per message, e.g. P(convert | click).

    A ``funnel`` model's booster learns the frequent outcome (``given``: a click); its calibrated probability
    times this table's rate is the probability of the rare ``target`` (a conversion). Each message's rate is
    shrunk toward its topic's, each topic's toward the overall rate, with strengths learned from the data
    (:mod:`nbm.shrinkage`): a message clicked 3 times says little about its conversion rate, its topic says
    more. A message the table does not know takes its topic's rate, and a topic it does not know the overall.
    """

    given: str
    messages: dict[str, float]
    topics: dict[str, float]
    message_topics: dict[str, str]
    overall: float
    strengths: dict[str, float] = field(default_factory=dict)   # pseudo-clicks toward the topic, the overall

    def rates(self, message_id, topic=None) -> np.ndarray:
        """The rate of each row's message (ids an array or a :class:`~nbm.arrays.Spread`); ``topic`` names
        (same forms) place messages the table does not know, else the topics it learned them with."""
        if isinstance(message_id, Spread):
            if topic is None or (isinstance(topic, Spread) and topic.index is message_id.index):
                return self._distinct_rates(message_id.values, None if topic is None else topic.values)[message_id.index]
            message_id = np.asarray(message_id)
        ids = np.asarray(message_id, dtype=object)
        inverse, distinct = pd.factorize(ids)
        topics = None
        if topic is not None:
            topics = np.empty(len(distinct), dtype=object)
            topics[inverse] = np.asarray(topic, dtype=object)
        return self._rates(np.asarray(distinct, dtype=object), topics)[inverse]

    def _distinct_rates(self, ids, topics) -> np.ndarray:
        """:meth:`_rates` of a vocabulary (a Spread's values), cached per vocabulary object: the service
        scores every request over the same one."""
        cache = self.__dict__.setdefault("_cache", {})
        key = (id(ids), id(topics))
        hit = cache.get(key)
        if hit is not None and hit[0] is ids and hit[1] is topics:
            return hit[2]
        rates = self._rates(np.asarray(ids, dtype=object), None if topics is None else np.asarray(topics, dtype=object))
        if len(cache) > 64:
            cache.clear()
        cache[key] = (ids, topics, rates)
        return rates

    def _rates(self, ids: np.ndarray, topics: np.ndarray | None) -> np.ndarray:
        out = np.empty(len(ids), dtype=np.float64)
        for i, m in enumerate(ids):
            rate = self.messages.get(m)
            if rate is None:
                name = self.message_topics.get(m) if topics is None or topics[i] is None else topics[i]
                rate = self.topics.get(name, self.overall)
            out[i] = rate
        return out

    def as_json(self) -> dict:
        return {"given": self.given, "messages": self.messages, "topics": self.topics,
                "message_topics": self.message_topics, "overall": self.overall, "strengths": self.strengths}


@dataclass(frozen=True)
class Risk:
    """The cost side of a send: P(unsubscribe | this send), learned from the log's unsubscribes attributed to
    sends (``training.risk``), and what an unsubscribe costs per channel when ``[arbitration] unsubscribe_cost``
    is ``auto``.

    ``booster`` (a small LightGBM on the ranker's features, calibrated by ``calibrator``) when the log holds
    enough unsubscribes to learn from, else ``None``: each channel's rate (``channel_rates``, shrunk toward
    the overall rate) is the risk of every send on it.
    """

    booster: lgb.Booster | None
    calibrator: Calibrator
    channel_rates: dict[str, float]
    overall: float
    channel_costs: dict[str, float]         # auto cost: revenue one user's channel earned over the horizon
    default_cost: float                     # … of a channel without its own figure

    def probability(self, artifact: ScoringArtifact, frame, channel) -> np.ndarray:
        """P(unsubscribe) of each row of ``frame`` (the ranker's features); ``channel`` names per row (an
        array or a Spread) for the table fallback."""
        if self.booster is not None:
            return self.calibrator(self.booster.predict(artifact.matrix(frame), num_threads=1))
        return _lookup(channel, self.channel_rates, self.overall)

    def costs(self, channel) -> np.ndarray:
        """The auto cost of an unsubscribe on each row's channel."""
        return _lookup(channel, self.channel_costs, self.default_cost)

    def save(self, directory: Path) -> dict:
        if self.booster is not None:
            self.booster.save_model(str(directory / RISK_FILE))
        return {"booster": self.booster is not None, "calibrator": {"x": list(self.calibrator.x),
                                                                       "y": list(self.calibrator.y)},
                "channel_rates": self.channel_rates, "overall": self.overall, "channel_costs": self.channel_costs,
                "default_cost": self.default_cost}

    @classmethod
    def load(cls, directory: Path, meta: dict) -> Risk:
        booster = lgb.Booster(model_file=str(directory / RISK_FILE)) if meta["booster"] else None
        return cls(booster, Calibrator(tuple(meta["calibrator"]["x"]), tuple(meta["calibrator"]["y"])),
                   meta["channel_rates"], meta["overall"], meta["channel_costs"], meta["default_cost"])


def _lookup(keys, table: dict[str, float], default: float) -> np.ndarray:
    """``table[key]`` (``default`` when absent) of each row's key; ``keys`` an array or a Spread (looked up
    once per distinct value)."""
    if isinstance(keys, Spread):
        values = np.array([table.get(k, default) for k in np.asarray(keys.values, dtype=object)], dtype=float)
        return values[keys.index]
    inverse, distinct = pd.factorize(np.asarray(keys, dtype=object))
    return np.array([table.get(k, default) for k in distinct], dtype=float)[inverse]


TIE_BREAK = 1e-9
"""Largest amount added to a calibrated probability to keep the booster's order (see ``score``)."""


@dataclass(frozen=True)
class ScoringArtifact:
    """Everything needed to score candidates.

    Attributes
    ----------
    booster
        The trained LightGBM booster.
    calibrator
        Raw score → probability of ``target``.
    features
        Column names, in the booster's order.
    categories
        For pandas-categorical columns: their categories, in code order (codes are what the booster saw).
    objective, target
        ``"lambdarank"`` or ``"binary"``; what the probability is of (``"convert"``, ``"click"``, …).
    versions
        Library versions it was trained with.
    prior_strengths
        The features' smoothing strengths the model was trained with (``{family: pseudo-sends}``): whoever
        scores with it featurises with them (``FeatureStore.with_strengths``), not with strengths learned
        again on its own data; ``None`` for models trained before them.
    trained_until
        ISO time (UTC) of the latest send the model learned from (booster, calibrator or funnel rates):
        ``nbm evaluate`` says when its test window is not after it (in-sample figures); ``None``: unknown.
    topics
        The topics of the catalog it was trained on, in the code order of its ``message_topic`` feature: a store
        of another catalog (topics added, removed or renamed since) has its codes mapped to these by name
        (:func:`decision.scoring.model_columns`); ``None`` for models trained before it (codes taken as they are).
    risk
        P(unsubscribe) of a send and the auto cost of an unsubscribe (:class:`Risk`): the decision's cost
        side (``[arbitration] unsubscribe_cost``); ``None`` for models trained before it (no cost).
    followup
        A ``funnel`` model's second step (:class:`FollowUp`): the booster's calibrated probability is of
        ``followup.given`` (a click), and ``score`` multiplies it by P(target | given) of each row's message.
    compiled
        The booster as machine code (see :meth:`compile`), or ``None``: scored by ``Booster.predict``.
    """

    booster: lgb.Booster
    calibrator: Calibrator
    features: tuple[str, ...]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    objective: str = "binary"
    target: str = "convert"
    versions: dict[str, str] = field(default_factory=dict)
    followup: FollowUp | None = None
    risk: Risk | None = None
    prior_strengths: dict[str, float] | None = None
    trained_until: str | None = None
    topics: tuple[str, ...] | None = None
    compiled: CompiledForest | None = field(default=None, compare=False, repr=False)

    def learned_from(self, start) -> bool:
        """Whether the model learned from sends at or after ``start`` (a timestamp): judged on a window from
        there, it would be judged in-sample. ``False`` when ``trained_until`` is unknown."""
        if self.trained_until is None:
            return False
        until, start = pd.Timestamp(self.trained_until), pd.Timestamp(start)
        utc = lambda t: t.tz_localize("UTC") if t.tzinfo is None else t      # noqa: E731 — naive is UTC
        return utc(until) >= utc(start)

    def compile(self, cache_dir: str | Path) -> ScoringArtifact:
        """This artifact scoring through its compiled booster (cached in ``cache_dir``); itself unchanged
        when compiling is not possible here (``nbm.compiled.LAST_FAILURE`` says why)."""
        forest = compile_booster(self.booster, cache_dir)
        return self if forest is None else replace(self, compiled=forest)

    def matrix(self, frame: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        """The float32 feature matrix of ``frame`` in the artifact's column order (categoricals as codes)."""
        n, columns = self.columns(frame)
        out = np.empty((n, len(self.features)), dtype=np.float32)
        for j, values in enumerate(columns):
            out[:, j] = values
        return out

    def columns(self, frame: pd.DataFrame | dict[str, np.ndarray]) -> tuple[int, list[np.ndarray | float]]:
        """The matrix's columns before they are stacked: (rows, one array or one scalar per feature, in the
        artifact's order). Categoricals are mapped to the artifact's codes (NaN when unknown). A user attribute
        the model learned from (``attr_…``) that the users table no longer has — or no longer names topics, for
        an ``attr_…_is_topic`` — is missing for everybody (NaN), as for a person without a value; any other
        missing feature is an error."""
        names = frame.keys() if isinstance(frame, dict) else frame.columns
        missing = [c for c in self.features if c not in names]
        if any(not c.startswith("attr_") for c in missing):
            raise ValueError(f"frame lacks feature column(s) {[c for c in missing if not c.startswith('attr_')]}")
        n = len(next(iter(frame.values()))) if isinstance(frame, dict) and frame else len(frame)
        indexes = self._category_indexes()
        out: list[np.ndarray | float | Spread] = []
        plain_dict = isinstance(frame, dict)
        for name in self.features:
            if name in missing:
                out.append(float("nan"))
                continue
            raw = frame[name]
            if name not in indexes and plain_dict:     # a numeric column of a dict (the service's): as it is
                if not isinstance(raw, Spread):
                    out.append(np.asarray(raw))
                elif isinstance(raw.values, np.ndarray):
                    out.append(raw)
                else:
                    out.append(Spread(np.asarray(raw.values), raw.index))
                continue
            if isinstance(raw, Spread):     # the distinct values mapped, still spread over the rows
                mapped = self._column(name, raw.values, len(raw.values), indexes)
                out.append(mapped if np.ndim(mapped) == 0 else Spread(mapped, raw.index))
            else:
                out.append(self._column(name, raw if isinstance(frame, dict) else raw.array, n, indexes))
        return n, out

    def _column(self, name: str, raw, n: int, indexes: dict[str, pd.Index]) -> np.ndarray | float:
        """One column of :meth:`columns` (``n`` values: an array, or a scalar when all are the same category)."""
        if name in indexes and isinstance(getattr(raw, "dtype", None), pd.CategoricalDtype):
            # Categorical columns: map their (few) categories once, then their codes.
            mapping = self._category_mapping(name, raw.categories)
            codes = np.append(mapping, -1)[np.asarray(raw.codes)]
            return np.where(codes >= 0, codes, np.nan)
        values = np.asarray(raw)
        if name not in indexes:
            return values
        if n and values.dtype == object and values[0] is not None and (values == values[0]).all():
            code = indexes[name].get_indexer([values[0]])[0]   # one user's candidates: one value
            return float(code) if code >= 0 else np.nan
        # Look up the distinct values only: one user's candidates share their attributes.
        inverse, distinct = pd.factorize(values, use_na_sentinel=True)
        codes = indexes[name].get_indexer(np.asarray(distinct, dtype=object)) if len(distinct) else np.zeros(0, int)
        mapped = np.append(codes, -1)[inverse]
        return np.where(mapped >= 0, mapped, np.nan)

    def _category_mapping(self, name: str, categories: pd.Index) -> np.ndarray:
        """Artifact code of each of ``categories`` (−1 when unknown), cached per distinct category list."""
        cache = self.__dict__.setdefault("_mappings", {})
        hit = cache.get((name, id(categories)))            # the same categories object: no comparison
        if hit is not None and hit[0] is categories:
            return hit[1]
        key = (name, tuple(categories))
        mapping = cache.get(key)
        if mapping is None:
            mapping = self._category_indexes()[name].get_indexer(np.asarray(categories, dtype=object))
            cache[key] = mapping
        if len(cache) > 1024:        # categories built per call would otherwise pile up
            cache.clear()
        cache[(name, id(categories))] = (categories, mapping)
        return mapping

    def _category_indexes(self) -> dict[str, pd.Index]:
        """The categories as indexes, built once per artifact (a lookup per request otherwise)."""
        cached = self.__dict__.get("_indexes")
        if cached is None:
            cached = {k: pd.Index(v) for k, v in self.categories.items()}
            object.__setattr__(self, "_indexes", cached)
        return cached

    def raw_score(self, frame: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
        """What ``Booster.predict`` gives for ``frame``'s rows (the booster's probability for ``binary``, its
        ranking score for ``lambdarank``): the calibrator's input. On one thread."""
        if self.compiled is not None:
            return self.compiled.predict_columns(*self.columns(frame))
        return self.booster.predict(self.matrix(frame), num_threads=1)

    def score(self, frame: pd.DataFrame | dict, message_id=None, topic=None) -> np.ndarray:
        """Calibrated probabilities of ``target``, one per row of ``frame``.

        A funnel model (``followup``) needs each row's message: ``message_id`` (an array or a Spread), else
        ``frame``'s ``message_id`` column; ``topic`` names, else ``frame``'s ``topic`` column when it has one,
        place messages its table does not know.

        Isotonic calibration is a step function: candidates the booster ranks apart can get the same
        probability, and a greedy decision would then draw between them at random. A term of at most
        1e-9, increasing in the raw score, keeps the booster's order inside a step.
        """
        raw = self.raw_score(frame)
        tie_break = TIE_BREAK / (1.0 + np.exp(-np.clip(raw, -50, 50)))
        probability = np.clip(self.calibrator(raw) + tie_break, 0.0, 1.0)
        if self.followup is None:
            return probability
        if message_id is None:
            if "message_id" not in (frame.keys() if isinstance(frame, dict) else frame.columns):
                raise ValueError("a funnel model scores with each row's message: pass `message_id`")
            message_id = frame["message_id"]
            if topic is None and "topic" in (frame.keys() if isinstance(frame, dict) else frame.columns):
                topic = frame["topic"]
        return probability * self.followup.rates(message_id, topic)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / BOOSTER_FILE))
        meta = {
            "calibrator": {"x": list(self.calibrator.x), "y": list(self.calibrator.y)},
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "objective": self.objective,
            "target": self.target,
            "versions": self.versions,
            "followup": None if self.followup is None else self.followup.as_json(),
            "risk": None if self.risk is None else self.risk.save(directory),
            "prior_strengths": self.prior_strengths,
            "trained_until": self.trained_until,
            "topics": None if self.topics is None else list(self.topics),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ScoringArtifact:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        booster = lgb.Booster(model_file=str(directory / BOOSTER_FILE))
        return cls(
            booster=booster,
            calibrator=Calibrator(tuple(meta["calibrator"]["x"]), tuple(meta["calibrator"]["y"])),
            features=tuple(meta["features"]),
            categories={k: tuple(v) for k, v in meta["categories"].items()},
            objective=meta["objective"],
            target=meta["target"],
            versions=meta["versions"],
            followup=None if meta.get("followup") is None else FollowUp(**meta["followup"]),
            risk=None if meta.get("risk") is None else Risk.load(directory, meta["risk"]),
            prior_strengths=meta.get("prior_strengths"),
            trained_until=meta.get("trained_until"),
            topics=None if meta.get("topics") is None else tuple(meta["topics"]),
        )


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model depends on."""
    return {"python": platform.python_version(), "lightgbm": lgb.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}
