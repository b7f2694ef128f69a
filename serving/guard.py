"""The service's door: API keys, content types, origins, body sizes and unknown paths, before any route runs.

:class:`Guard` is an ASGI middleware the service registers with BentoML (``NbmService.add_asgi_middleware``);
it answers the requests it refuses itself, in the service's error envelope
(``{"error": CODE, "detail": MESSAGE, "field": FIELD | None, "status": STATUS}``, :func:`envelope`), so that no
route — and no parser — sees them, and puts the routes' own error answers in the same envelope:

* **API keys** (``[service] api_keys``, ``api_keys_file``, ``NBM_API_KEYS``; :func:`load_keys`): when any is
  configured every route but the health checks (``/healthz``, ``/livez``, ``/readyz``) needs one, as
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. A key is ``KEY`` (every scope), ``read:KEY``
  (``/recommend``, ``/recommend_batch``, the OpenAPI, ``/metrics``) or ``write:KEY`` (``/feedback``, ``/users``, ``/messages``). No key:
  401; a key without the route's scope: 403. Keys are held and looked up as SHA-256 digests and never
  logged. A header the door reads (``Content-Type``, ``Origin``, ``Authorization``, ``X-API-Key``,
  ``Content-Length``) given twice is a 400: the route would read another copy than the door. ``nbm serve`` refuses a non-loopback ``--host`` without keys (:func:`require_keys`).
* **Content types**: a POST must be ``application/json`` (any charset parameter): 415 otherwise — a form or
  ``text/plain`` body is what a web page can post across sites without asking first, and BentoML answered
  ``multipart/form-data`` with a 500.
* **Origins**: a write route refuses a request whose ``Origin`` is not in ``[service] allowed_origins`` (403);
  requests without ``Origin`` (servers, curl) are not browsers and pass.
* **Body size**: a body over ``[service] max_body_bytes`` is refused (413) from its ``Content-Length`` before
  it is read, or as soon as a streamed body passes the limit (the door reads the body, then hands it on).
* **WebSockets**: no route speaks them; refused at the door.
* **Unknown paths**: answered 404 here, and counted in ``/metrics`` under one ``endpoint="/<unknown>"`` label
  instead of one label per path (:func:`bound_metrics_labels`).
* **The docs page** (``GET /``, ``/docs``): nbm's own Swagger UI page, from BentoML's bundled assets and
  ``/docs.json`` only (BentoML's page loads Google Tag Manager): :data:`serving.openapi.DOCS_PAGE`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from starlette.routing import get_route_path

_LOG = logging.getLogger(__name__)

HEALTH = frozenset({"/healthz", "/livez", "/readyz"})
WRITE_ROUTES = frozenset({"/feedback", "/users", "/messages"})
READ_ROUTES = frozenset({"/recommend", "/recommend_batch"})
DOCS_PAGES = frozenset({"/", "/docs"})
OTHER_ROUTES = frozenset({"/metrics", "/docs.json", "/schema.json"}) | DOCS_PAGES
KNOWN_PREFIXES = ("/static_content/",)
UNKNOWN = "/<unknown>"
"""The one path label every unknown path is counted under in ``/metrics``."""
SCOPES = ("read", "write")
SINGLE = frozenset({"content-type", "origin", "authorization", "x-api-key", "content-length"})
"""Headers a request may give once: the door and the route must read the same value."""
ECHO = 100
"""Longest piece of a client's input an error message repeats."""


def clip(value: object, limit: int = ECHO) -> str:
    """``repr(value)``, cut to ``limit`` characters with the length said: an error never echoes a
    megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def known(path: str) -> bool:
    return path in HEALTH or path in WRITE_ROUTES or path in READ_ROUTES or path in OTHER_ROUTES \
        or path.startswith(KNOWN_PREFIXES)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class Keys:
    """SHA-256 digests of the API keys, per scope."""

    read: frozenset[bytes] = frozenset()
    write: frozenset[bytes] = frozenset()

    @property
    def required(self) -> bool:
        return bool(self.read or self.write)

    def __len__(self) -> int:
        return len(self.read | self.write)

    def allows(self, key: str | None, scope: str) -> bool | None:
        """``True`` when ``key`` has ``scope``, ``False`` when it is a key without it, ``None`` when it is no key."""
        if not key:
            return None
        digest = _digest(key)       # a set lookup on a SHA-256 digest: nothing about a key leaks by its timing
        hits = {s: digest in getattr(self, s) for s in SCOPES}
        if not any(hits.values()):
            return None
        return hits[scope]


def parse_keys(entries: Iterable[str], source: str) -> Keys:
    """Keys from entries ``KEY`` (both scopes), ``read:KEY`` or ``write:KEY``; ``source`` names where they
    come from in an error (never the key itself)."""
    read, write = set(), set()
    for i, raw in enumerate(entries):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        scope, sep, key = entry.partition(":")
        if not sep or scope not in SCOPES:
            scope, key = "", entry
        if len(key) < 16 or not key.isprintable() or any(c.isspace() for c in key):
            raise ValueError(f"{source}: entry {i + 1} is not a usable API key (at least 16 printable characters "
                             "without spaces, optionally prefixed by read: or write:)")
        if scope in ("", "read"):
            read.add(_digest(key))
        if scope in ("", "write"):
            write.add(_digest(key))
    return Keys(frozenset(read), frozenset(write))


def load_keys(config, environ: dict[str, str] | None = None) -> Keys:
    """Every configured key: ``[service] api_keys``, the lines of ``[service] api_keys_file`` and the
    comma-separated ``NBM_API_KEYS``."""
    environ = os.environ if environ is None else environ
    service = config.service
    parts = [parse_keys(service.api_keys, "[service] api_keys")]
    if service.api_keys_file:
        path = Path(service.api_keys_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"[service] api_keys_file: cannot read {str(path)!r}: {exc.strerror}") from None
        parts.append(parse_keys(lines, f"[service] api_keys_file {str(path)!r}"))
    if environ.get("NBM_API_KEYS"):
        parts.append(parse_keys(environ["NBM_API_KEYS"].split(","), "NBM_API_KEYS"))
    return Keys(frozenset().union(*(p.read for p in parts)), frozenset().union(*(p.write for p in parts)))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_keys(host: str, keys: Keys) -> str | None:
    """Why the service may not listen on ``host`` with ``keys`` (``None``: it may): off loopback, anyone on the
    network could post sends, unsubscribes and conversions."""
    if is_loopback(host) or keys.required:
        return None
    return (f"`--host {host}` is reachable from other machines: set API keys first ([service] api_keys, "
            "api_keys_file or NBM_API_KEYS; docs/serving.md, \"Security\"), or listen on 127.0.0.1")


@dataclass(frozen=True)
class GuardSettings:
    keys: Keys
    allowed_origins: frozenset[str]
    max_body_bytes: int
    channels: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()

    @classmethod
    def of(cls, config, environ: dict[str, str] | None = None) -> GuardSettings:
        service = config.service
        return cls(load_keys(config, environ), frozenset(o.rstrip("/") for o in service.allowed_origins),
                   service.max_body_bytes, tuple(config.channels), known_triggers(config, (environ or os.environ).get("NBM_DATA")))


def known_triggers(config, data: str | None) -> tuple[str, ...]:
    """The trigger names a request may give: ``[triggers]``'s and the catalog's ``trigger:NAME`` tags (the data
    directory's messages table, when it can be read), sorted — the OpenAPI's enum."""
    names = set(config.triggers)
    if data:
        from pathlib import Path

        from nbm.io import find_table, read_raw_table

        try:
            path = find_table(Path(data), "messages")
            tags = read_raw_table(path)["tags"] if path is not None else []
        except Exception:  # noqa: BLE001 — the document only; the engine reports an unreadable catalog
            tags = []
        for value in tags:
            items = value.split(";") if isinstance(value, str) else list(value) if value is not None else []
            names.update(t[len("trigger:"):] for t in items if isinstance(t, str) and t.startswith("trigger:"))
    return tuple(sorted(n for n in names if n))


CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         413: "payload_too_large", 415: "unsupported_media_type", 503: "unavailable"}
"""The envelope's ``error`` code of each status (other 4xx: ``invalid_request``; other 5xx: ``internal_error``)."""


def error_body(status: int, code: str, detail: str, field: str | None = None) -> dict:
    """The service's one error shape (``serving.schemas.ErrorResponse``)."""
    return {"error": code, "detail": detail, "field": field, "status": status}


def envelope(status: int, body: bytes) -> dict:
    """``body``, an error answer from a route, in the service's one error shape (:func:`error_body`): pydantic's
    list of validation errors (BentoML's 400), the service's ``[{"error": "`field`: …"}]``, or any other JSON or
    text."""
    code = CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error_body(status, code, clip(body.decode("utf-8", "replace"), 300))
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return error_body(status, code, clip(data, 300))
    if set(data) == {"error", "detail", "field", "status"}:
        return data
    detail = data.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict) and "msg" in detail[0]:
        first = detail[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())).lstrip(".")
        if first.get("type") == "json_invalid":
            field = ""
        message = str(first["msg"])
        more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
        return error_body(status, code, (f"`{field}`: {message}" if field else message) + more, field or None)
    message = data.get("error") if isinstance(data.get("error"), str) else str(detail if detail is not None else data)
    if isinstance(detail, str) and isinstance(data.get("error"), str) and detail not in message:
        message = f"{message}: {detail}"
    match = re.match(r"`([^`]+)`:", message)
    if len(message) > 1000:
        message = f"{message[:1000]}… ({len(message):,} characters)"
    return error_body(status, code, message, match.group(1) if match else None)


async def _answer(send, status: int, code: str, detail: str, headers: Iterable[tuple[bytes, bytes]] = (),
                  field: str | None = None) -> None:
    body = orjson.dumps(error_body(status, code, detail, field))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _page(send, method: str) -> None:
    """nbm's docs page (:data:`serving.openapi.DOCS_PAGE`), with a Content-Security-Policy that lets it load
    nothing but this service's own files."""
    from serving.openapi import DOCS_PAGE, DOCS_POLICY

    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(DOCS_PAGE)).encode()),
                            (b"content-security-policy", DOCS_POLICY.encode()),
                            (b"cache-control", b"no-cache")]})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else DOCS_PAGE})


class Guard:
    """The ASGI middleware; ``settings`` as :class:`GuardSettings` (built from the configuration when the
    service's worker starts: :meth:`GuardSettings.of`)."""

    def __init__(self, app, settings: GuardSettings | None = None, settings_factory=None) -> None:
        self.app = app
        self._settings = settings
        self._factory = settings_factory

    @property
    def settings(self) -> GuardSettings:
        if self._settings is None:
            self._settings = self._factory()
        return self._settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":             # no route speaks it: refused at the door (403)
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["path"] = scope.get("nbm.path") or scope["path"]       # see bound_metrics_labels
        path = get_route_path(scope)                 # what the router routes on (less any root_path)
        if path in HEALTH:
            await self.app(scope, receive, send)
            return
        if not known(path):
            await _answer(send, 404, "not_found", f"no route {clip(path)}; routes: /recommend, /recommend_batch, "
                                                  "/feedback, /users, /messages, /healthz, /readyz, /livez, /metrics, "
                                                  "/docs.json, / (docs)")
            return
        settings = self.settings
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            if name in SINGLE and name in headers:   # the router would read the first, a dict the last
                await _answer(send, 400, "invalid_request", f"the `{name}` header is given more than once",
                              field=name)
                return
            headers[name] = raw_value.decode("latin-1")
        write = path in WRITE_ROUTES
        if settings.keys.required:
            key = headers.get("x-api-key") or None
            auth = headers.get("authorization", "")
            if key is None and auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
            allowed = settings.keys.allows(key, "write" if write else "read")
            if allowed is None:
                await _answer(send, 401, "unauthorized", "an API key is required: `Authorization: Bearer KEY` or "
                                                         "`X-API-Key: KEY`", [(b"www-authenticate", b"Bearer")],
                              "Authorization")
                return
            if not allowed:
                await _answer(send, 403, "forbidden", f"this API key may not use {path} (it needs the "
                                                      f"{'write' if write else 'read'} scope)", field="Authorization")
                return
        method = scope.get("method", "GET")
        if path in DOCS_PAGES and method in ("GET", "HEAD"):
            await _page(send, method)
            return
        if write and "origin" in headers and headers["origin"].rstrip("/") not in settings.allowed_origins:
            await _answer(send, 403, "forbidden_origin", f"requests from origin {clip(headers['origin'])} may not "
                                                         f"write; allowed: [service] allowed_origins", field="Origin")
            return
        if method == "POST":
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                await _answer(send, 415, "unsupported_media_type",
                              f"`Content-Type` must be application/json, got {clip(media or 'none')}",
                              field="Content-Type")
                return
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    await _answer(send, 400, "invalid_request", f"`Content-Length` is not a number: {clip(length)}",
                                  field="Content-Length")
                    return
                if int(length) > settings.max_body_bytes:
                    await self._too_large(send, settings)
                    return
            body = await self._read(receive, settings.max_body_bytes)
            if body is None:
                await self._too_large(send, settings)
                return
            await self.app(scope, _replay(body, receive), self._rewriting(send, path, settings))
            return
        await self.app(scope, receive, self._rewriting(send, path, settings))

    @staticmethod
    async def _read(receive, limit: int) -> bytes | None:
        """The whole body, or ``None`` once it passes ``limit`` bytes (a streamed body has no Content-Length to
        refuse it by): read here, before the route, so that a 413 is the answer and not the route's 500."""
        parts, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":    # the client went away: nothing to answer
                return b"".join(parts)
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                return None
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _too_large(self, send, settings: GuardSettings) -> None:
        await _answer(send, 413, "payload_too_large",
                      f"the body exceeds [service] max_body_bytes ({settings.max_body_bytes:,} bytes)",
                      [(b"connection", b"close")])

    def _rewriting(self, send, path: str, settings: GuardSettings):
        """``send`` with error answers put in the one envelope (:func:`envelope`) and the OpenAPI completed
        (:func:`serving.openapi.patch_spec`); other answers pass as they are."""
        held: dict | None = None
        chunks: list[bytes] = []

        async def rewrite(message):
            nonlocal held
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400 or (path == "/docs.json" and status == 200):
                    held = message
                    return
                await send(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            try:
                if held["status"] == 200:
                    from serving.openapi import patch_spec

                    body = orjson.dumps(patch_spec(orjson.loads(body), settings.channels, settings.triggers))
                else:
                    body = orjson.dumps(envelope(held["status"], body))
            except Exception:  # noqa: BLE001 — an answer that cannot be rewritten goes out as it came, never hangs
                _LOG.exception("could not rewrite the answer to %s", clip(path))
            headers = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return rewrite


def _replay(body: bytes, receive):
    """A ``receive`` that gives the app the body already read, then the client's own messages (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def bound_metrics_labels() -> None:
    """Count every unknown path under one ``/metrics`` label: BentoML's traffic-metrics middleware, the
    outermost, labels each request by its path, so 3,000 random paths made ``/metrics`` 12 MB. It now sees
    :data:`UNKNOWN` for them; :class:`Guard` (inside it) restores the path from ``scope["nbm.path"]`` and
    answers 404. Idempotent."""
    from bentoml._internal.server.http import instruments

    cls = instruments.RunnerTrafficMetricsMiddleware
    if getattr(cls, "_nbm_bounded", False):
        return
    original = cls.__call__

    async def __call__(self, scope, receive, send):
        if scope.get("type") in ("http", "websocket"):
            path = scope.get("path", "")
            label = UNKNOWN if not known(path) else KNOWN_PREFIXES[0] if path.startswith(KNOWN_PREFIXES) else None
            if label is not None:       # Swagger's files: one label too
                scope = {**scope, "nbm.path": path, "path": label}
        await original(self, scope, receive, send)

    cls.__call__ = __call__
    cls._nbm_bounded = True
