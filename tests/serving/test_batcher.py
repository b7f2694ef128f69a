"""Concurrent /recommend calls are decided together, each getting its own answer (serving/batcher.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batcher import MicroBatcher


def _slow_echo(calls: list[list[dict]], release: threading.Event | None = None):
    def decide_many(requests: list[dict]) -> list[dict]:
        calls.append(list(requests))
        if release is not None and len(calls) == 1:
            release.wait(5)      # hold the first batch until the others queued up behind it
        return [{"user_id": r["user_id"], "batch": len(calls)} for r in requests]
    return decide_many


def test_a_lone_call_is_decided_at_once() -> None:
    calls: list[list[dict]] = []
    batcher = MicroBatcher(_slow_echo(calls))
    assert asyncio.run(batcher.submit({"user_id": "u1"})) == {"user_id": "u1", "batch": 1}
    assert batcher.batch_sizes == [1]


def test_calls_arriving_during_a_batch_are_decided_together_in_order() -> None:
    calls: list[list[dict]] = []
    release = threading.Event()
    batcher = MicroBatcher(_slow_echo(calls, release), max_batch=4)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit({"user_id": "u0"}))
        await asyncio.sleep(0.05)                       # u0's batch is running on its thread
        rest = [asyncio.ensure_future(batcher.submit({"user_id": f"u{i}"})) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        release.set()
        return [await first] + [await r for r in rest]

    answers = asyncio.run(scenario())
    assert [a["user_id"] for a in answers] == [f"u{i}" for i in range(7)]     # each call its own answer
    assert batcher.batch_sizes == [1, 4, 2]                                    # max_batch respected
    assert [a["batch"] for a in answers] == [1, 2, 2, 2, 2, 3, 3]
    assert [r["user_id"] for r in calls[1]] == ["u1", "u2", "u3", "u4"]


def test_an_exception_fails_only_its_own_batch() -> None:
    def decide_many(requests):
        if any(r["user_id"] == "bad" for r in requests):
            raise RuntimeError("boom")
        return [{"user_id": r["user_id"]} for r in requests]

    batcher = MicroBatcher(decide_many)

    async def scenario():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit({"user_id": "bad"})
        return await batcher.submit({"user_id": "good"})

    assert asyncio.run(scenario()) == {"user_id": "good"}


def test_a_wrong_number_of_answers_is_an_error_not_a_hang() -> None:
    batcher = MicroBatcher(lambda requests: [])
    with pytest.raises(RuntimeError, match="0 answers to 1 requests"):
        asyncio.run(asyncio.wait_for(batcher.submit({"user_id": "u"}), 5))


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="`max_batch`"):
        MicroBatcher(lambda r: r, max_batch=0)


def test_inline_batches_decide_on_the_loop_and_still_batch_the_calls_that_arrived_meanwhile() -> None:
    """The loop's own thread decides: calls submitted while a batch runs are read after it and decided
    together, in order, each with its own answer."""
    calls: list[list[dict]] = []
    loop_threads: set[int] = set()

    def decide_many(requests: list[dict]) -> list[dict]:
        loop_threads.add(threading.get_ident())
        calls.append(list(requests))
        return [{"user_id": r["user_id"], "batch": len(calls)} for r in requests]

    batcher = MicroBatcher(decide_many, max_batch=4, inline=True)

    async def scenario():
        tasks = [asyncio.ensure_future(batcher.submit({"user_id": f"u{i}"})) for i in range(7)]
        return await asyncio.gather(*tasks), threading.get_ident()

    answers, loop_thread = asyncio.run(scenario())
    assert loop_threads == {loop_thread}
    assert [a["user_id"] for a in answers] == [f"u{i}" for i in range(7)]
    assert batcher.batch_sizes == [4, 3]
    assert [a["batch"] for a in answers] == [1, 1, 1, 1, 2, 2, 2]
