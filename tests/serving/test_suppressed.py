"""The answer's ``suppressed`` list per decision, against a row-by-row reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from nbm.policy.contact import REASON_NAMES
from decision.answer import suppressed_by_decision


def test_suppressed_entries_match_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(7)
    n, width = 400, 6
    group = np.sort(rng.integers(0, 40, n))
    ok = rng.random((n, width)) < 0.8
    ok[np.arange(n), rng.integers(0, width, n)] = True                   # every pair has a slot
    allowed = ok & (rng.random((n, width)) < 0.3)
    code = np.where(ok & ~allowed, rng.integers(1, len(REASON_NAMES), (n, width)), 0)
    messages = np.array([f"m{i}" for i in range(12)], dtype=object)
    channels = np.array(["email", "push", "sms"], dtype=object)
    fields = dict(group=group, ok=ok, messages=messages, channels=channels,
                  message_code=rng.integers(0, 12, n), channel_code=rng.integers(0, 3, n))
    pairs = type("Pairs", (), {"__len__": lambda self: n, **fields})()      # what the function reads of Pairs
    contact = SimpleNamespace(allowed=allowed, code=code)
    got = suppressed_by_decision(pairs, contact)
    expected: dict[int, list[dict[str, str]]] = {}
    for row in range(n):
        if allowed[row].any():
            continue
        first = int(np.flatnonzero(ok[row])[0])
        expected.setdefault(int(group[row]), []).append(
            {"message_id": messages[pairs.message_code[row]], "channel": channels[pairs.channel_code[row]],
             "reason": REASON_NAMES[code[row, first]]})
    assert expected and got == expected
    assert sum(map(len, got.values())) > len({id(e) for v in got.values() for e in v})   # entries are shared
