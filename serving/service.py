"""The BentoML service: ``/recommend``, ``/recommend_batch``, ``/feedback``, ``/users``, ``/messages`` (DESIGN.md, "Service contract").

Started by ``nbm serve`` (which sets the ``NBM_*`` variables below and runs ``bentoml serve`` on
127.0.0.1), or in-process from :func:`asgi_app`. Each worker process builds one :class:`~serving.engine.Engine`
at start: the data directory's snapshot, the model behind the registry alias, the state store.

Environment: ``NBM_DATA`` (data directory, required), ``NBM_CONFIG`` (configuration file), ``NBM_MODEL``
(default ``models:/nbm-ranker@champion``), ``NBM_EXPLORER`` (default ``epsilon_greedy``),
``NBM_THRESHOLD`` (default 0), ``NBM_RELOAD_SECONDS`` (default 60), ``NBM_WORKERS`` (default 1),
``NBM_MAX_BATCH`` (default 64: most concurrent ``/recommend`` calls a worker decides together; 1 turns
that off; batches are decided on the event loop's thread, ``NBM_BATCH_THREAD=1`` hands them to a worker
thread instead; a ``/recommend_batch`` request is decided on the loop's thread too, ``BATCH_CHUNK``
requests at a time with a few loop turns between pieces), ``NBM_WORKERS_FILE`` (set by ``nbm serve`` with
several workers: the file in which they share their keep-alive connection counts, ``serving/balance.py``),
``NBM_TRACING`` (``1``: OpenTelemetry spans for
the scoring routes too; by default they are left out of tracing, which cost ~8 % of a worker's CPU with no
exporter configured).
Answers are encoded once, with orjson, into the HTTP response (BentoML's generic path validated each
answer into a pydantic model and rebuilt its JSON schema per response: ~18 % of a worker's CPU; both shares
from a py-spy ``--gil`` profile of one worker under ``benchmarks/serve.py``'s concurrency-8 load, docs/serving.md).
BentoML's own ``/healthz``, ``/readyz``, ``/livez`` and ``/metrics`` come with it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import bentoml
import orjson
from starlette.responses import Response

from nbm import telemetry
from nbm.config import load_config
from serving.balance import ConnectionBalancer, connection
from serving.batcher import DEFAULT_MAX_BATCH, MicroBatcher
from serving.engine import BadRequest, Engine, EngineSettings
from serving.guard import Guard, GuardSettings, bound_metrics_labels
from serving.schemas import (BatchRequest, BatchResponse, FeedbackRequest, FeedbackResponse, MessagesRequest,
                             MessagesResponse, RecommendRequest, RecommendResponse, UsersRequest, UsersResponse)

telemetry.switch_off()      # also when started by `bentoml serve` directly: before BentoML's serve tracking
bound_metrics_labels()      # unknown paths: one /metrics label (serving/guard.py)


def settings_from_env() -> EngineSettings:
    data = os.environ.get("NBM_DATA")
    if not data:
        raise RuntimeError("NBM_DATA is not set: the service needs a data directory (nbm serve --data DIR)")
    return EngineSettings(
        data=Path(data), model=os.environ.get("NBM_MODEL", "models:/nbm-ranker@champion"),
        explorer=os.environ.get("NBM_EXPLORER", "epsilon_greedy"),
        threshold=float(os.environ.get("NBM_THRESHOLD", "0")),
        reload_seconds=float(os.environ.get("NBM_RELOAD_SECONDS", "60")),
    )


SCORING_ROUTES = ["/recommend", "/recommend_batch", "/feedback", "/users", "/messages"]
BATCH_CHUNK = 500
"""Requests of a ``/recommend_batch`` decided in one piece (~0.2 s on the benchmark's machine)."""
BATCH_YIELDS = 8
"""Turns of the event loop between two pieces of a batch (a health check needs a few to be answered)."""


def _tracing() -> dict:
    """BentoML's tracing settings: the scoring routes are left out unless ``NBM_TRACING=1``."""
    return {} if os.environ.get("NBM_TRACING") == "1" else {"excluded_urls": SCORING_ROUTES}


CLOSE = {"connection": "close"}
RETRY = {"retry-after": "1"}


def _json(body: dict, close: bool = False) -> Response:
    """``body`` as the JSON response, encoded in one call; ``close``: with ``Connection: close``."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=CLOSE if close else None)


def _bad(exc: BadRequest, prefix: str = "") -> bentoml.exceptions.InvalidArgument:
    return bentoml.exceptions.InvalidArgument(f"`{prefix}{exc.field}`: {exc.detail}")


PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that the server that started it is still there (:func:`exit_with_parent`)."""


def exit_with_parent() -> None:
    """Stop this worker when the server process that started it is gone. BentoML starts each worker in a session
    of its own, so a ``kill -9`` of ``nbm serve`` (or of its process group) reaches the server alone, and its
    workers would go on serving the listening socket they inherited — on the port a restarted service takes,
    with the old configuration. A thread watches the parent: once this worker has been handed to another (its
    parent died), it stops as on SIGTERM, and for good 10 s later. Not in a process whose parent is already
    ``init`` (a container's entry point)."""
    import signal
    import threading
    import time

    parent = os.getppid()
    if parent == 1:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="nbm-parent-watch", daemon=True).start()


@bentoml.service(name="nbm", workers=int(os.environ.get("NBM_WORKERS", "1")),
                 traffic={"timeout": 60}, tracing=_tracing())
class NbmService:
    def __init__(self) -> None:
        exit_with_parent()
        telemetry.switch_off()
        config = load_config(os.environ.get("NBM_CONFIG") or None)
        self.engine = Engine(config, settings_from_env())
        # Concurrent /recommend calls of this worker are decided together (serving/batcher.py).
        self.batcher = MicroBatcher(self.engine.recommend_many, max_batch=int(os.environ.get("NBM_MAX_BATCH", str(DEFAULT_MAX_BATCH))),
                                    inline=os.environ.get("NBM_BATCH_THREAD") != "1")
        # Keep-alive connections spread evenly over the workers (serving/balance.py); None with one worker.
        self.balancer = ConnectionBalancer.from_env()

    def _close(self, ctx: bentoml.Context) -> bool:
        """Whether to close this request's connection after its answer (the worker has more than its share)."""
        if self.balancer is None:
            return False
        return self.balancer.observe(connection(ctx.request.scope))

    # The routes' docstrings are their descriptions in the OpenAPI (the first paragraph its summary); each
    # output_spec declares the answer there only: the answers are encoded by _json, never validated per response.
    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(self, ctx: bentoml.Context, **request) -> Response:
        """Decide the next message for one person: which message, on which channel, at which hour — or nothing now.

        Only `user_id` is required; an unknown person is a new one (population features), not an error. The
        answer's `items` (at most `k`) are what to send, each with the `propensity` it was chosen with; empty
        `items` mean nothing now (`suppressed` or `reason` says why). Report the sends back to `POST /feedback`
        with the `decision_id`. 503 (with `Retry-After: 1`) when the person's contacts kept changing under other
        writers: nothing was decided.
        """
        if request.get("context") is not None and not isinstance(request["context"], dict):
            request["context"] = request["context"].model_dump()
        try:
            self.engine.validate(request.get("channels"), request.get("candidates"), request.get("user_id"),
                                 request.get("context"))
        except BadRequest as exc:
            raise _bad(exc) from None
        answer = await self.batcher.submit(request)
        if "error" in answer:           # unreserved: the user's contacts kept changing under other writers
            # (BentoML sets a route's status and extra headers from its context, over the Response's own.)
            ctx.response.status_code = 503
            ctx.response.metadata.update(RETRY)
        return _json(answer, self._close(ctx))

    @bentoml.api(route="/recommend_batch", input_spec=BatchRequest, output_spec=BatchResponse)
    async def recommend_batch(self, ctx: bentoml.Context, requests: list[RecommendRequest]) -> Response:
        """Decide for many people at once (a campaign run): one answer per request, in order.

        Each request as for `POST /recommend`; one refused request (a 400 naming `requests[i].field`) refuses the
        batch. A person whose contacts kept changing under other writers gets `{"user_id", "error"}` in its place.
        """
        # Decided on the event loop's thread: a worker busy with a batch accepts no new connection meanwhile,
        # so concurrent batches spread over the workers, and no worker thread fights the loop for the GIL
        # (benchmarks/batches.py, two at a time on 2 workers: median 4,093 decisions/s as a sync endpoint on
        # BentoML's thread pool, 4,377 this way; docs/serving.md). BATCH_CHUNK requests at a time, with a few
        # loop turns between pieces, so that health checks and other calls of this worker are answered
        # during a long batch (a 10,000-request batch in one piece held /readyz for 6.2 s; 239 ms in pieces).
        try:
            self.engine.check_batch(len(requests))
        except BadRequest as exc:
            raise _bad(exc) from None
        for i, r in enumerate(requests):
            try:
                self.engine.validate(r.channels, r.candidates, r.user_id, r.context.model_dump() if r.context else None)
            except BadRequest as exc:
                raise _bad(exc, f"requests[{i}].") from None
        asked = [r.model_dump() for r in requests]
        results: list[dict] = []
        for lo in range(0, len(asked), BATCH_CHUNK):
            if lo:
                for _ in range(BATCH_YIELDS):
                    await asyncio.sleep(0)
            results.extend(self.engine.recommend_many(asked[lo:lo + BATCH_CHUNK]))
        return _json({"results": results}, self._close(ctx))

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    def feedback(self, ctx: bentoml.Context, events: list) -> Response:
        """Report sends, outcomes and other events back (rows of the events table); durable before the answer.

        Each event is validated on its own: a bad one is `rejected` with its index and the reason, the good ones
        are stored, and an `event_id` seen before is a duplicate, not stored twice. A send counts for the caps, an
        unsubscribe or a bounce takes the channel away, at once.
        """
        return _json(self.engine.feedback(events), self._close(ctx))

    @bentoml.api(route="/users", input_spec=UsersRequest, output_spec=UsersResponse)
    def users(self, ctx: bentoml.Context, users: list) -> Response:
        """Upsert people: consent, time zone, sign-up time, attributes and linked identifiers.

        Given fields replace what nbm knows, attributes name by name; durable, and every worker decides by them
        within a second. A bad row is `rejected` with its index and the reason, the others are stored.
        """
        return _json(self.engine.upsert_users(users), self._close(ctx))

    @bentoml.api(route="/messages", input_spec=MessagesRequest, output_spec=MessagesResponse)
    def messages(self, ctx: bentoml.Context, messages: list) -> Response:
        """Add, change or end catalog messages (`end_at` ends one).

        A new message needs `topic` and `channels`; a known one's given fields are replaced. Durable, and every
        worker decides by them. A bad row is `rejected` with its index and the reason, the others are stored.
        """
        return _json(self.engine.upsert_messages(messages), self._close(ctx))


def _guard_settings() -> GuardSettings:
    """The door's settings, read when a worker's app first takes a request: the configuration file and
    ``NBM_API_KEYS`` of the worker's environment (serving/guard.py)."""
    return GuardSettings.of(load_config(os.environ.get("NBM_CONFIG") or None))


NbmService.add_asgi_middleware(Guard, settings_factory=_guard_settings)
