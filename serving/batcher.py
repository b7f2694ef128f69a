"""Dynamic batching of concurrent ``/recommend`` calls within one worker.

A decision has a fixed cost (one pass through candidates, features, scoring, policy) and a small cost per
decision once vectorised: four decisions taken together cost well under four taken one after another
(``benchmarks/serve.py`` prints the in-process curve: 3.9 ms for one, 6.3 ms for four on 2026-12-02). BentoML's adaptive batching needs a list-shaped HTTP input, which ``/recommend`` is not
(the service contract takes one object), so the service batches itself: a call that arrives while a batch
is being decided waits for it to finish and is decided with the others that arrived meanwhile, in one
``decide_many`` call on a worker thread. A call that arrives when nothing is running starts at once, so
light traffic waits for nothing; under load each call waits at most for the batch ahead of it.

With ``inline`` (the service's default) the batch is decided on the event loop's own thread: the loop
stops for the batch, and the calls that arrived meanwhile are read when it is done and make up the next
one — the same batching, without handing each batch to a worker thread that then fights the loop for the
GIL (``benchmarks/serve.py``, concurrency 8 with 2 workers, with httptools and uvloop: p50 29.6 → 12.5–16.9
ms, 558 → 767–981 answers/s; docs/serving.md).
Between batches the loop gets ``INLINE_YIELDS`` turns, and as many again (at most ``INLINE_ROUNDS``
times) while calls keep reaching :meth:`MicroBatcher.submit`: a call whose bytes are in is not left for
the batch after next.

Every call still gets its own decision (``decide_many`` returns one answer per request, in order); an
exception fails the calls of its batch only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MAX_BATCH = 64
INLINE_YIELDS = 4
INLINE_ROUNDS = 8


@dataclass
class MicroBatcher:
    """Collects concurrent requests and decides them together; see the module docstring.

    Parameters
    ----------
    decide_many
        Answers for a list of requests, one per request and in their order (runs on a worker thread).
    max_batch
        Most requests decided in one call.
    inline
        Decide on the event loop's thread (see the module docstring) rather than on a worker thread.
    """

    decide_many: Callable[[list[dict]], list[dict]]
    max_batch: int = DEFAULT_MAX_BATCH
    inline: bool = False
    batch_sizes: list[int] = field(default_factory=list, repr=False)   # the last sizes, for tests and metrics
    _pending: list[tuple[dict, asyncio.Future]] = field(default_factory=list, repr=False)
    _running: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"`max_batch` must be at least 1, got {self.max_batch}")

    async def submit(self, request: dict) -> dict:
        """The answer to ``request``, decided with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
                try:
                    if self.inline:
                        answers = self.decide_many([request for request, _ in batch])
                    else:
                        answers = await asyncio.to_thread(self.decide_many, [request for request, _ in batch])
                    if len(answers) != len(batch):
                        raise RuntimeError(f"{len(answers)} answers to {len(batch)} requests")
                except Exception as exc:  # noqa: BLE001 — handed to each caller of this batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(batch, answers):
                    if not future.done():
                        future.set_result(answer)
                if self.inline:
                    # Let the calls that arrived meanwhile reach `submit` (a call takes a few loop turns
                    # from its bytes to here): turns in rounds of INLINE_YIELDS, again while calls still come.
                    for _ in range(INLINE_ROUNDS):
                        before = len(self._pending)
                        for _ in range(INLINE_YIELDS):
                            await asyncio.sleep(0)
                        if len(self._pending) == before:
                            break
        finally:
            self._running = False
