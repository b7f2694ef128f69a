"""What a logged action is, for the off-policy replay: the thing the log's propensity is the probability of.

nbm's own decisions choose a (message, channel, send slot) — slots are whole local hours after the decision —
and log the propensity of that choice, so a replayed policy's probability of a logged send is its mass on
the same message, channel and send hour (:data:`SLOT`; a send logged at 10:07 is the 10:00 slot's action).
Other logs carry no such choice: an impression on a website, a send whose time the campaign fixed — their
propensity covers the message (and channel) only, and their send times fall at any second, on no slot nbm
offers. Matched on the hour, such sends match no policy's action (on the Open Bandit Dataset's uniform log
0 of 2,376 impressions: every policy's ESS 0, its IPS 0). There the action is the (message, channel)
(:data:`PAIR`), and a policy's probability of it is its mass summed over its slots.

Which one a log gets is measured, not assumed (:func:`choose`): among the logged sends whose (message,
channel) was eligible at their decision, the share whose send hour is also one of the slots nbm offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.compute import HOUR_NS

SLOT_SHARE = 0.5
"""At least this share of the eligible logged sends on an offered slot: actions are matched with their slot."""


@dataclass(frozen=True)
class ActionKey:
    """The columns a logged send and a policy's actions are matched on, and how a report names them."""

    name: str
    columns: tuple[str, ...]
    label: str


SLOT = ActionKey("slot", ("message_id", "channel", "hour"), "(message, channel, send hour)")
PAIR = ActionKey("pair", ("message_id", "channel"), "(message, channel)")
KEYS = {key.name: key for key in (SLOT, PAIR)}


def hour_bucket(times: np.ndarray) -> np.ndarray:
    """Send times to the hour (a logged send at 10:07 is the 10:00 slot's action)."""
    return np.asarray(times, dtype=np.int64) // HOUR_NS


@dataclass(frozen=True)
class Offered:
    """The eligible actions of a chunk of decisions under each action key, as sorted distinct int64 codes
    (``codes[key]``) with how many candidates — (message, channel, slot) rows — each covers (``candidates[key]``:
    1 for a slot's action, its slots for a (message, channel)). Built once per chunk from the candidates'
    vocabulary codes: grouping ~300 candidates a decision by their string columns would cost more than the
    rest of the uniform policy's replay."""

    codes: dict[str, np.ndarray]
    candidates: dict[str, np.ndarray]
    shape: tuple[int, int, int, int]
    """(messages, channels, first hour, hours): the ranges the codes pack."""

    @classmethod
    def of(cls, decision: np.ndarray, message: np.ndarray, channel: np.ndarray, hour: np.ndarray, n_messages: int,
           n_channels: int) -> Offered:
        """From one row per candidate: its decision, message and channel codes and send hour (:func:`hour_bucket`)."""
        first = int(hour.min()) if len(hour) else 0
        shape = (n_messages, n_channels, first, int(hour.max()) - first + 1 if len(hour) else 1)
        codes, candidates = {}, {}
        for key in KEYS.values():
            code = _pack(key, decision, message, channel, hour, shape)
            codes[key.name], candidates[key.name] = np.unique(code, return_counts=True)
        return cls(codes, candidates, shape)

    def candidates_of(self, key: ActionKey, decision: np.ndarray, message: np.ndarray, channel: np.ndarray,
                      hour: np.ndarray) -> np.ndarray:
        """Candidates each action covers (0: not offered; a message or channel code −1 is unknown, not offered)."""
        code = _pack(key, decision, message, channel, hour, self.shape)
        known, at = self.codes[key.name], np.zeros(len(code), dtype=np.int64)
        if not len(known):
            return at
        at = np.minimum(np.searchsorted(known, code), len(known) - 1)
        return np.where((code >= 0) & (known[at] == code), self.candidates[key.name][at], 0)


def _pack(key: ActionKey, decision, message, channel, hour, shape: tuple[int, int, int, int]) -> np.ndarray:
    """One int64 per action: (decision, message, channel[, hour − first hour]); −1 where a part is out of range."""
    n_messages, n_channels, first, n_hours = shape
    message, channel = np.asarray(message, dtype=np.int64), np.asarray(channel, dtype=np.int64)
    code = (np.asarray(decision, dtype=np.int64) * n_messages + message) * n_channels + channel
    valid = (message >= 0) & (message < n_messages) & (channel >= 0) & (channel < n_channels)
    if "hour" in key.columns:
        offset = np.asarray(hour, dtype=np.int64) - first
        code = code * n_hours + offset
        valid &= (offset >= 0) & (offset < n_hours)
    return np.where(valid, code, -1)


def choose(covered_sends: dict[str, int]) -> ActionKey:
    """:data:`SLOT` when at least :data:`SLOT_SHARE` of the logged sends nbm could have made (their (message,
    channel) eligible) fall on one of its slots, or when none could; otherwise :data:`PAIR`."""
    pair, slot = covered_sends.get("pair", 0), covered_sends.get("slot", 0)
    return SLOT if pair == 0 or slot >= SLOT_SHARE * pair else PAIR


def describe(key: ActionKey, covered_sends: dict[str, int]) -> str:
    """One line on the action definition used and the counts that chose it."""
    pair, slot = covered_sends.get("pair", 0), covered_sends.get("slot", 0)
    if key is SLOT:
        return (f"actions matched on {key.label}: {slot:,} of the {pair:,} logged sends with an eligible "
                "(message, channel) fall on a send slot nbm offers")
    return (f"actions matched on {key.label}: only {slot:,} of the {pair:,} logged sends with an eligible "
            "(message, channel) fall on a send slot nbm offers, so the log's propensities are of the message and "
            "channel, not of a send time; each policy's probability is summed over its slots")
