"""``decide()``: the one decision function — contact policy, arbitration, send time, exploration.

Given the scored candidates of one user (every eligible message × channel × send slot with its calibrated
probability), it

1. applies the contact policy (caps, gaps, cooldowns; quiet hours move the send time);
2. arbitrates: expected value = probability × message value × business weight; per (message, channel) the
   best allowed slot is its send time;
3. sends nothing when the best expected value is below ``threshold`` (``reason = "below_threshold"``);
4. lets the explorer choose among the remaining (message, channel) pairs and returns the propensity.

Pure (no I/O, randomness only through ``rng``), so the service, batch scoring and offline replay call the
same code. Feature computation and scoring happen before, in the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbm.config import ContactPolicyConfig
from nbm.policy.contact import SendHistory, apply_contact_policy
from nbm.policy.explore import Arms, Explorer


@dataclass(frozen=True)
class ScoredCandidates:
    """One user's candidates, aligned arrays: ids, send times (int64 ns), probabilities and values."""

    message_id: np.ndarray
    channel: np.ndarray
    send_at: np.ndarray
    probability: np.ndarray
    value: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.message_id)


@dataclass(frozen=True)
class Item:
    message_id: str
    channel: str
    send_at: pd.Timestamp
    score: float
    propensity: float


@dataclass(frozen=True)
class Suppressed:
    message_id: str
    channel: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """The answer: at most one item; every suppressed (message, channel) with its reason; a reason when empty."""

    items: list[Item]
    suppressed: list[Suppressed] = field(default_factory=list)
    reason: str = ""
    propensity_error: float = 0.0


def decide(candidates: ScoredCandidates, history: SendHistory, timezone: str, policy: ContactPolicyConfig,
           explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0, arms: Arms | None = None) -> Decision:
    """Decide for one user; see the module docstring. ``arms`` (per candidate row) feed Thompson sampling."""
    if not len(candidates):
        return Decision([], [], "no_eligible_candidate")
    contact = apply_contact_policy(candidates.channel, candidates.message_id, candidates.send_at, history, timezone,
                                   policy)
    weight = np.ones(len(candidates)) if candidates.weight is None else np.asarray(candidates.weight, dtype=float)
    expected = np.asarray(candidates.probability, dtype=float) * np.asarray(candidates.value, dtype=float) * weight
    message_code, _ = pd.factorize(candidates.message_id)
    channel_code, channels = pd.factorize(candidates.channel)
    pair = message_code.astype(np.int64) * max(len(channels), 1) + channel_code
    # A pair is suppressed when none of its slots is allowed; its reason is its first slot's.
    allowed = contact.allowed
    allowed_pairs = np.unique(pair[allowed])
    blocked = ~np.isin(pair, allowed_pairs)
    _, first_blocked = np.unique(pair[blocked], return_index=True)
    rows_blocked = np.flatnonzero(blocked)[np.sort(first_blocked)]
    suppressed = [Suppressed(str(candidates.message_id[r]), str(candidates.channel[r]), str(contact.reason[r]))
                  for r in rows_blocked]  # one per suppressed (message, channel): tens at most
    if not allowed.any():
        return Decision([], suppressed, "all_suppressed")
    # Send time: the allowed slot with the best expected value, per pair (first row of each pair, best first).
    rows = np.flatnonzero(allowed)
    order = rows[np.lexsort((-expected[rows], pair[rows]))]
    best_rows = order[np.r_[True, pair[order][1:] != pair[order][:-1]]]
    values = expected[best_rows]
    if values.max() < threshold:
        return Decision([], suppressed, "below_threshold")
    pair_arms = None if arms is None else Arms(np.asarray(arms.successes)[best_rows], np.asarray(arms.failures)[best_rows])
    choice = explorer.choose(values, rng, pair_arms)
    row = best_rows[choice.index]
    item = Item(str(candidates.message_id[row]), str(candidates.channel[row]),
                pd.Timestamp(int(contact.send_at[row]), tz="UTC"), float(candidates.probability[row]), choice.propensity)
    return Decision([item], suppressed, "", choice.propensity_error)
