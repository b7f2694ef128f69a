"""What a logged decision's reward is, for the off-policy value of a policy: it follows the data.

A log whose conversions carry revenue is valued in revenue per decision (the revenue attributed to the
decision's send), as nbm's simulated worlds and a CRM with order tracking are. A log with conversions but no
revenue is valued in conversions per decision, and a log with no conversion at all — the Open Bandit Dataset,
a CRM that tracks clicks only — in clicks per decision (1 when the decision's send was clicked). The label
printed beside a policy value says which, so a click rate is never read as revenue.

The reward model of doubly robust estimates the same reward: the model's calibrated probability × the
message's value for revenue, the probability alone otherwise (its target should then be the reward's
outcome: ``nbm train --target click`` on a click log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from nbm.attribution import GRADE


@dataclass(frozen=True)
class Reward:
    """One kind of reward: its name, the unit a policy value is printed in, the outcome event that completes it
    and whether the reward model weights its probability by the message's value."""

    name: Literal["revenue", "conversions", "clicks"]
    unit: str
    outcome: Literal["convert", "click"]
    value_weighted: bool

    def of(self, rows: pd.DataFrame) -> np.ndarray:
        """The reward of each training-set row (one logged send): revenue, or 1 where the send reached the outcome."""
        if self.value_weighted:
            return rows["revenue"].to_numpy(dtype=float)
        return (rows["label"].to_numpy() >= GRADE[self.outcome]).astype(float)


REWARDS = {
    "revenue": Reward("revenue", "revenue per decision", "convert", True),
    "conversions": Reward("conversions", "conversions per decision", "convert", False),
    "clicks": Reward("clicks", "clicks per decision", "click", False),
}


def reward_of(events: pd.DataFrame) -> Reward:
    """The reward a log supports: revenue when a conversion carries a positive ``value``, else conversions when
    it has any, else clicks when it has any; a log with none of them gets revenue (every reward is then 0)."""
    return reward_of_kinds(*outcome_kinds(events))


def outcome_kinds(events: pd.DataFrame) -> tuple[bool, bool, bool]:
    """Whether some events are conversions with a positive ``value``, conversions, clicks — what
    :func:`reward_of_kinds` decides from (a log in parts: each part's, combined by ``or``)."""
    kinds = events["event_type"].to_numpy(dtype=object)
    converts = kinds == "convert"
    value = events["value"].to_numpy(dtype=float)[converts] if "value" in events else np.zeros(0)
    return bool((np.nan_to_num(value) > 0).any()), bool(converts.any()), bool((kinds == "click").any())


def reward_of_kinds(valued: bool, converted: bool, clicked: bool) -> Reward:
    """:func:`reward_of` from :func:`outcome_kinds`."""
    if converted:
        return REWARDS["revenue"] if valued else REWARDS["conversions"]
    return REWARDS["clicks"] if clicked else REWARDS["revenue"]
