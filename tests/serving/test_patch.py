"""Sends the snapshot lacks (feedback, planned items) patch the contact-recency features at once."""

from __future__ import annotations

import numpy as np

from serving.engine import DAY_NS, HOUR_NS, PATCHED, Engine
from serving.state import Contacts

T = 100 * DAY_NS


def test_patch_counts_and_recency_per_channel_and_message() -> None:
    n = 3   # candidates: (m1, email), (m2, email), (m1, sms)
    frame = {name: np.zeros(n, dtype=np.float32) for name in PATCHED}
    for name in ("time_hours_since_contact", "uc_hours_since_contact", "um_days_since_received"):
        frame[name] = np.full(n, 1000.0, dtype=np.float32)
    contacts = Contacts(np.array([T - 3 * HOUR_NS, T - 2 * DAY_NS, T + 5 * HOUR_NS]),   # the last is planned later
                        np.array(["email", "email", "sms"], dtype=object), np.array(["m1", "m9", "m1"], dtype=object), 0)
    Engine._patch(frame, np.array(["email", "email", "sms"], dtype=object), np.array(["m1", "m2", "m1"], dtype=object),
                  contacts, T)
    np.testing.assert_allclose(frame["time_hours_since_contact"], [3, 3, 3])
    np.testing.assert_allclose(frame["user_contacts_7d"], [2, 2, 2])
    np.testing.assert_allclose(frame["uc_hours_since_contact"], [3, 3, 1000])    # no past sms send
    np.testing.assert_allclose(frame["uc_contacts_24h"], [1, 1, 0])
    np.testing.assert_allclose(frame["uc_contacts_7d"], [2, 2, 0])
    np.testing.assert_allclose(frame["um_received"], [1, 0, 1])                   # m1 once before T
    np.testing.assert_allclose(frame["um_days_since_received"], [0.125, 1000, 0.125])
