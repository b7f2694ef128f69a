"""The OpenAPI the service publishes (``/docs.json``) and the docs page that shows it (``/``): nbm's own title,
version and description, typed answers, one error envelope, and the request schemas as strict as the service.

BentoML builds the document from the routes' request models, answer models (``output_spec``) and docstrings;
:func:`patch_spec` completes it, and :class:`serving.guard.Guard` applies it to BentoML's answer (the document is
small and asked for rarely):

* ``info``: the installed package's name, version and summary (``importlib.metadata``), and a description of
  the routes (BentoML's title is the service's name, its version ``"None"`` outside a Bento);
* each route's summary and description from its method's docstring (``serving.service.NbmService``);
* each route's 200 answer typed (:data:`ANSWERS`), and its error answers (:data:`ERRORS`: 400, 401, 403, 404,
  413, 415, 500; 503 for ``/recommend``) as the one envelope the service answers them with,
  :class:`~serving.schemas.ErrorResponse`;
* ``channels`` limited to the configured channels (an ``enum``): the service refuses others;
* request fields that may be ``null`` marked ``nullable`` (BentoML's document drops it).

What a JSON schema cannot say and the service still refuses (400): an identifier with characters that are not
printable (docs/serving.md, "Errors"), a ``now`` outside 1680–2259 — both also stated as patterns.

The docs page (:data:`DOCS_PAGE`) is Swagger UI from the files BentoML ships (``/static_content/``), pointed at
``/docs.json``: BentoML's own page also loads Google Tag Manager, and Swagger UI's default sends the document's
address to an online validator (``validatorUrl``); this one loads nothing from elsewhere, and says so in its
Content-Security-Policy (:data:`DOCS_POLICY`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import inspect
from functools import lru_cache
from importlib import metadata

from serving.schemas import (RESERVED_ATTRIBUTES, BatchResponse, ErrorResponse, FeedbackResponse, MessagesResponse,
                             RecommendResponse, UsersResponse, identifier_pattern, time_zones)

PACKAGE = "nbm"
ROUTES = ("`POST /recommend` decides for one person, `POST /recommend_batch` for many, `POST /feedback` reports "
          "sends and outcomes back, `POST /users` updates what nbm knows of people, `POST /messages` the catalog. "
          "Every error answer is `{\"error\": CODE, \"detail\": MESSAGE, \"field\": FIELD or null, \"status\": "
          "STATUS}` (`ErrorResponse`). With API keys configured, send `Authorization: Bearer KEY` "
          "(docs/serving.md, \"Security\").")
ANSWERS = {"/recommend": RecommendResponse, "/recommend_batch": BatchResponse, "/feedback": FeedbackResponse,
           "/users": UsersResponse, "/messages": MessagesResponse}
"""Each route's 200 answer (declared also as its ``output_spec`` in serving/service.py; never validated at run
time: the answers are encoded in one orjson call)."""
ERRORS = {"400": "Bad request: a field is missing, malformed or refused (`field` names it)",
          "401": "An API key is required", "403": "The API key lacks the route's scope, or the Origin may not write",
          "404": "No such route", "413": "The body exceeds [service] max_body_bytes",
          "415": "The body is not application/json", "500": "An unexpected error (the server's log has it)"}
REF = "#/components/schemas/{model}"


@lru_cache(maxsize=1)
def package_info() -> tuple[str, str, str]:
    """(title, version, description) of the document, from the installed package's metadata (``pyproject.toml``):
    ``nbm — Next-best-message engine`` (the name and the summary's head), the version, the summary and the routes;
    ``nbm.__version__`` when the package is not installed (a source tree on ``sys.path``)."""
    try:
        meta = metadata.metadata(PACKAGE)
        name, version, summary = meta["Name"], meta["Version"], meta.get("Summary") or ""
    except metadata.PackageNotFoundError:
        from nbm import __version__

        name, version, summary = PACKAGE, __version__, ""
    head = summary.split(":", 1)[0].strip()
    return (f"{name} — {head}" if head else name), version, f"{summary}\n\n{ROUTES}".strip()


def _schemas() -> dict[str, dict]:
    """Component schemas of the answers and the error envelope."""
    out: dict[str, dict] = {}
    for model in (*ANSWERS.values(), ErrorResponse):
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _json(ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}}


def patch_spec(spec: dict, channels: tuple[str, ...] | list[str] = (), triggers: tuple[str, ...] | list[str] = ()) -> dict:
    """``spec`` (BentoML's document) completed as the module says; the input is not changed."""
    spec = copy.deepcopy(spec)
    title, version, description = package_info()
    spec["info"] = {"title": title, "version": version, "description": description}
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse",
                 *(f"{model.__name__}IODescriptor" for model in ANSWERS.values())):    # BentoML's copies of the answers
        components.pop(name, None)
    components.update(_schemas())
    for path, answer in ANSWERS.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True     # no body is a 415 (no JSON), not a default request
        doc = inspect.cleandoc(operation.get("description") or "")   # BentoML's: the method's docstring as written
        operation["summary"] = doc.split("\n\n", 1)[0].replace("\n", " ")
        operation["description"] = doc
        responses = {"200": _json(answer.__name__, answer.__doc__.strip() if answer.__doc__ else "The answer")}
        responses.update({code: _json(ErrorResponse.__name__, text) for code, text in ERRORS.items()})
        if path == "/recommend":
            responses["503"] = _json(ErrorResponse.__name__, "The person's contacts kept changing under other "
                                                             "writers: retry (Retry-After: 1)")
        operation["responses"] = responses
    _request_rules(spec, list(channels), set(_schemas()), list(triggers))
    return spec


_SWAGGER = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true,
                               validatorUrl: null, layout: "BaseLayout"});
};"""
DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>nbm — API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"><noscript>The OpenAPI document: <a href="./docs.json">docs.json</a></noscript></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>{_SWAGGER}</script>
  </body>
</html>
""".encode()
"""``GET /`` and ``GET /docs``: Swagger UI from BentoML's bundled files, no tracker, no online validator."""
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'sha256-"
               + base64.b64encode(hashlib.sha256(_SWAGGER.encode()).digest()).decode()
               + "'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
                 "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""The page's Content-Security-Policy: the browser loads and connects to this service only, runs the one inline
script of the page (by its hash), and the page cannot be framed by another site."""


NOW_PATTERN = r"^\s*(?:16[89][0-9]|1[7-9][0-9][0-9]|2[01][0-9][0-9]|22[0-5][0-9])-[0-9]{2}-[0-9]{2}"
"""A decision's ``now``: ISO-8601 text in the years 1680–2259 (serving.schemas.DECIDE_YEARS)."""


def _request_rules(spec: dict, channels: list[str], answers: set[str], triggers: list[str] | None = None) -> None:
    """What the service checks beyond BentoML's types, on every request schema (inline in a path's body or a
    component; the answers' schemas, ``answers``, left alone): ``nullable`` where the default is ``null``
    (pydantic's ``X | None``, which BentoML's document drops), ``channels`` limited to the configured names,
    identifiers (``user_id``, ``arm``) with the printable rule as a ``pattern``, ``now`` with its years; in a
    request's ``context``, ``consent`` limited to the channels, ``timezone`` to the IANA names the system knows,
    attribute names to printable ones other than the users table's own columns."""
    identifier = identifier_pattern()
    bodies = [op.get("requestBody", {}) for item in spec.get("paths", {}).values() for op in item.values()
              if isinstance(op, dict)]
    requests = [schema for name, schema in spec.get("components", {}).get("schemas", {}).items() if name not in answers]
    for props in _properties([*bodies, *requests]):
        if not triggers and "trigger" in props and "event_type" not in props:   # a context: no trigger is known
            props.pop("trigger")
        for name, prop in props.items():
            if not isinstance(prop, dict):
                continue
            if "default" in prop and prop["default"] is None and "anyOf" not in prop:
                prop["nullable"] = True
            for variant in prop.get("anyOf", [prop]):
                if name in ("channels", "consent") and channels and variant.get("type") == "array":
                    variant["items"] = {"type": "string", "enum": channels}
                elif name == "timezone" and variant.get("type") == "string":
                    variant["enum"] = list(time_zones())
                elif name == "event_type" and variant.get("type") == "string" and triggers:
                    variant["enum"] = list(triggers)
                elif name == "attributes" and variant.get("type") == "object":
                    variant["propertyNames"] = {"pattern": identifier, "maxLength": 128,
                                                "not": {"enum": list(RESERVED_ATTRIBUTES)}}
                elif name in ("user_id", "arm") and variant.get("type") == "string":
                    variant["pattern"] = identifier
                elif name == "now" and variant.get("format") == "date-time":
                    variant["pattern"] = NOW_PATTERN


def _properties(node):
    """Every ``properties`` mapping under ``node`` (nested schemas included)."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield node["properties"]
        for value in node.values():
            yield from _properties(value)
    elif isinstance(node, list):
        for value in node:
            yield from _properties(value)
