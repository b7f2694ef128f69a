"""Vocabulary.extended: messages added to a catalog take spare codes after the known ones, so that indexes built
on the vocabulary stay valid (the live catalog, serving/engine.py); anything else is refused (``None``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history import SPARE_CODES, Vocabulary, spare
from nbm.config import NbmConfig


def _catalog(rows: list[tuple[str, str, list[str]]]) -> pd.DataFrame:
    return pd.DataFrame({"message_id": [m for m, _, _ in rows], "topic": [t for _, t, _ in rows],
                         "tags": [list(g) for _, _, g in rows]})


BASE = [("m1", "news", ["a"]), ("m2", "sale", ["b", "a"]), ("m3", "news", [])]


@pytest.fixture()
def vocabulary() -> Vocabulary:
    return Vocabulary.build(_catalog(BASE), NbmConfig())


def test_new_messages_topics_and_tags_take_the_next_codes(vocabulary) -> None:
    extended = vocabulary.extended(_catalog([*BASE, ("m4", "travel", ["c", "a"]), ("m5", "news", ["d"])]))
    assert extended is not None
    assert list(extended.messages) == ["m1", "m2", "m3", "m4", "m5"]
    assert list(extended.topics) == ["news", "sale", "travel"]            # known codes kept, the new one after
    assert list(extended.tags) == ["a", "b", "c", "d"]
    assert list(np.asarray(extended.topics)[extended.message_topic]) == ["news", "sale", "news", "travel", "news"]
    tags = {m: sorted(extended.tags[extended.message_tags[extended.message_tags.index == m]]) for m in range(5)}
    assert tags == {0: ["a"], 1: ["a", "b"], 2: [], 3: ["a", "c"], 4: ["d"]}
    # The pair-key sizes do not move: an index built on the first vocabulary answers for the second.
    assert (extended.topic_slots, extended.tag_slots, extended.message_slots) == \
        (vocabulary.topic_slots, vocabulary.tag_slots, vocabulary.message_slots) == (2 + 64, 2 + 64, 3 + 64)
    assert extended.extended(_catalog([*BASE, ("m4", "travel", ["c", "a"]), ("m5", "news", ["d"])])) is not None


@pytest.mark.parametrize("rows", [
    [BASE[1], BASE[0], BASE[2], ("m4", "news", [])],                      # known messages reordered
    [BASE[0], BASE[2], ("m4", "news", [])],                               # a known message gone
    [BASE[0], ("m2", "travel", ["b", "a"]), BASE[2], ("m4", "news", [])],  # a known message's topic changed
    [BASE[0], ("m2", "sale", ["b"]), BASE[2]],                            # a known message's tags changed
    [*BASE, *((f"n{i}", "news", []) for i in range(SPARE_CODES + 1))],    # more new messages than spare codes
    [*BASE, *((f"n{i}", f"topic-{i}", []) for i in range(SPARE_CODES + 1))],   # more new topics than spare codes
])
def test_what_would_move_a_known_code_or_overflow_is_refused(vocabulary, rows) -> None:
    assert vocabulary.extended(_catalog(rows)) is None


def test_the_spare_codes_grow_with_the_catalog() -> None:
    assert spare(0) == SPARE_CODES and spare(10) == 10 + SPARE_CODES and spare(1000) == 1500
