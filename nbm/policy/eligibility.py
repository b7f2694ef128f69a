"""Eligibility: which (message, channel, send slot) a user may be sent at all, before the contact policy.

A candidate is eligible when the message is live at the slot (``start ≤ send < end``), targets the user's
lifecycle stage (no targeting: every stage), allows the channel, and the user consents to the channel and
has not unsubscribed from or bounced on it; the request's ``channels`` and ``candidates`` filters come on
top. Pure array logic over the catalog and the users' state, vectorised over decisions; the feature
pipeline gathers the arrays (``decision.candidates.expand``, ``decision.pairs.expand_many``).
"""

from __future__ import annotations

import numpy as np


def eligible(message_channels: np.ndarray, message_stages: np.ndarray, start: np.ndarray, end: np.ndarray,
             consent: np.ndarray, stage: np.ndarray, slots: np.ndarray,
             message_filter: np.ndarray | None = None) -> np.ndarray:
    """Bool (decisions, messages, channels, slots).

    ``message_channels`` (m, c) and ``message_stages`` (m, stages) describe the catalog, ``start``/``end``
    (m,) its live windows (int64 ns); ``consent`` (n, c) is each user's usable consent (unsubscribes and
    bounces already removed, request channel filter applied), ``stage`` (n,) their lifecycle stage codes,
    ``slots`` (n, s) the candidate send times (−1 where a decision has fewer slots); ``message_filter``
    (n, m), when given, the request's ``candidates``.
    """
    pairs, live = eligible_parts(message_channels, message_stages, start, end, consent, stage, slots, message_filter)
    return pairs[:, :, :, None] & live[:, :, None, :]


def eligible_parts(message_channels: np.ndarray, message_stages: np.ndarray, start: np.ndarray, end: np.ndarray,
                   consent: np.ndarray, stage: np.ndarray, slots: np.ndarray,
                   message_filter: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`eligible` as its two factors: bool (decisions, messages, channels) — the message allows the
    channel, targets the stage, the user consents — and bool (decisions, messages, slots) — the message is
    live at the slot. A candidate is eligible when both hold."""
    pairs = message_channels[None, :, :] & consent[:, None, :] & message_stages[:, stage].T[:, :, None]   # (n, m, c)
    if message_filter is not None:
        pairs &= message_filter[:, :, None]
    live = ((start[None, :, None] <= slots[:, None, :]) & (slots[:, None, :] < end[None, :, None])
            & (slots >= 0)[:, None, :])                                                                  # (n, m, s)
    return pairs, live
