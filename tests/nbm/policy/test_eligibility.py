"""Eligibility: live window, lifecycle targeting, channel allowed and consented, request filters."""

from __future__ import annotations

import numpy as np

from nbm.policy.eligibility import eligible

H = 3_600 * 10**9
# Two messages × two channels; message 0 allows both channels and targets stage 0 only, message 1 allows
# channel 1 and targets every stage, live from hour 10.
CHANNELS = np.array([[True, True], [False, True]])
STAGES = np.array([[True, False, False, False], [True, True, True, True]])
START = np.array([0, 10 * H])
END = np.array([100 * H, 100 * H])


def test_every_rule_removes_what_it_should() -> None:
    consent = np.array([[True, True], [True, False]])
    stage = np.array([0, 1])
    slots = np.array([[8 * H, 12 * H], [12 * H, -1]])
    ok = eligible(CHANNELS, STAGES, START, END, consent, stage, slots)
    assert ok.shape == (2, 2, 2, 2)
    # User 0 (stage 0, both channels): message 0 on both channels at both slots; message 1 (channel 1) only
    # at 12:00 (not yet live at 08:00).
    assert ok[0, 0].tolist() == [[True, True], [True, True]]
    assert ok[0, 1].tolist() == [[False, False], [False, True]]
    # User 1 (stage 1, consents to channel 0 only): message 0 does not target stage 1; message 1 is on
    # channel 1 only, which the user refuses; the missing slot is never eligible.
    assert not ok[1].any()


def test_the_candidates_filter() -> None:
    consent = np.ones((1, 2), dtype=bool)
    ok = eligible(CHANNELS, STAGES, START, END, consent, np.array([0]), np.array([[12 * H]]),
                  message_filter=np.array([[False, True]]))
    assert not ok[0, 0].any() and ok[0, 1, 1, 0]


def test_a_message_past_its_end_is_not_eligible() -> None:
    ok = eligible(CHANNELS, STAGES, START, np.array([11 * H, 100 * H]), np.ones((1, 2), bool), np.array([0]),
                  np.array([[11 * H]]))
    assert not ok[0, 0].any() and ok[0, 1, 1, 0]
