"""What the service says about itself (issue 43): one error envelope from every source of an error, an OpenAPI
with the package's title and version and every route's typed answer and description, a docs page that loads
nothing from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from importlib import metadata

import pytest
from starlette.testclient import TestClient

from serving.guard import Guard, GuardSettings, parse_keys
from serving.schemas import ErrorResponse

READ, WRITE = "r" * 20, "w" * 20
ROUTES = ("/recommend", "/recommend_batch", "/feedback", "/users", "/messages")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def keyed(client):
    """The service behind a door that asks for keys (the session's service has none configured)."""
    settings = GuardSettings(parse_keys([f"read:{READ}", f"write:{WRITE}"], "test"), frozenset(), 8 << 20)
    return TestClient(Guard(client.app, settings))


@pytest.fixture(scope="module")
def spec(client) -> dict:
    return client.get("/docs.json").json()


# One bad request per place an error is produced: (what, keyed door, method, path, request, status, code, field).
BAD = [
    ("pydantic: a value out of range", False, "POST", "/recommend", {"json": {"user_id": "u1", "k": 0}},
     400, "invalid_request", "k"),
    ("pydantic: a batch's item", False, "POST", "/recommend_batch",
     {"json": {"requests": [{"user_id": "u1"}, {"user_id": "u1", "k": 0}]}}, 400, "invalid_request", "requests[1].k"),
    ("pydantic: an unknown field", False, "POST", "/feedback", {"json": {"events": [{}], "colour": 1}},
     400, "invalid_request", "colour"),
    ("pydantic: an empty list", False, "POST", "/users", {"json": {"users": []}}, 400, "invalid_request", "users"),
    ("pydantic: a wrong type", False, "POST", "/messages", {"json": {"messages": "m1"}},
     400, "invalid_request", "messages"),
    ("malformed JSON", False, "POST", "/recommend", {"content": b'{"user_id": ', "headers": JSON},
     400, "invalid_request", None),
    ("a body that is not an object", False, "POST", "/recommend", {"content": b"[]", "headers": JSON},
     400, "invalid_request", None),
    ("the engine (InvalidArgument): an unknown channel", False, "POST", "/recommend",
     {"json": {"user_id": "u1", "channels": ["fax"]}}, 400, "invalid_request", "channels"),
    ("the engine: a batch's item", False, "POST", "/recommend_batch",
     {"json": {"requests": [{"user_id": "u1"}, {"user_id": "u2", "channels": ["fax"]}]}},
     400, "invalid_request", "requests[1].channels"),
    ("the door: a header given twice", False, "POST", "/recommend",
     {"content": b'{"user_id": "u1"}', "headers": [("content-type", "application/json")] * 2},
     400, "invalid_request", "content-type"),
    ("the door: no API key", True, "POST", "/recommend", {"json": {"user_id": "u1"}},
     401, "unauthorized", "Authorization"),
    ("the door: a key without the scope", True, "POST", "/feedback",
     {"json": {"events": [{}]}, "headers": {"Authorization": f"Bearer {READ}"}}, 403, "forbidden", "Authorization"),
    ("the door: a foreign origin", False, "POST", "/feedback",
     {"json": {"events": [{}]}, "headers": {"Origin": "https://evil.example"}}, 403, "forbidden_origin", "Origin"),
    ("the door: an unknown route", False, "POST", "/recommendations", {"json": {}}, 404, "not_found", None),
    ("Starlette: an unknown static file", False, "GET", "/static_content/nothing.js", {}, 404, "not_found", None),
    ("Starlette: a route's other method", False, "GET", "/recommend", {}, 405, "method_not_allowed", None),
    ("the door: a body over 8 MiB", False, "POST", "/feedback",
     {"content": b"[" + b" " * (8 << 20) + b"]", "headers": JSON}, 413, "payload_too_large", None),
    ("the door: not JSON", False, "POST", "/recommend", {"content": b"user_id=u1", "headers":
     {"content-type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type", "Content-Type"),
]


@pytest.mark.parametrize(("what", "door", "method", "path", "request_", "status", "code", "field"), BAD,
                         ids=[row[0] for row in BAD])
def test_every_error_comes_in_the_one_envelope(client, keyed, spec, what, door, method, path, request_, status, code,
                                               field) -> None:
    response = (keyed if door else client).request(method, path, **request_)
    assert response.status_code == status, (what, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert set(answer) == {"error", "detail", "field", "status"}, answer
    assert (answer["error"], answer["field"], answer["status"]) == (code, field, status), answer
    assert answer["detail"] and len(answer["detail"]) < 1100
    ErrorResponse.model_validate(answer)
    if method == "POST" and path in ROUTES:        # and the OpenAPI declares it
        declared = spec["paths"][path]["post"]["responses"][str(status)]
        assert declared["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_an_unexpected_error_is_a_500_in_the_envelope(client, monkeypatch) -> None:
    from serving.engine import Engine

    def broken(self, events):
        raise RuntimeError("a secret detail of the server")

    monkeypatch.setattr(Engine, "feedback", broken)
    response = client.post("/feedback", json={"events": [{"event_id": "x"}]})
    assert response.status_code == 500
    answer = response.json()
    assert answer["error"] == "internal_error" and answer["status"] == 500 and answer["field"] is None
    assert "secret" not in response.text                # the log has it, not the client
    ErrorResponse.model_validate(answer)


def test_the_openapi_has_the_packages_title_version_and_description(spec) -> None:
    meta = metadata.metadata("nbm")
    info = spec["info"]
    assert info["version"] == metadata.version("nbm") == meta["Version"] and info["version"] != "None"
    assert info["title"].split(" — ")[0] == meta["Name"] and info["title"] != meta["Name"]
    assert meta["Summary"] in info["description"]
    assert "bentoml" not in str(info).lower()


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _conforms(spec: dict, schema: dict, value, where: str) -> None:
    """Every key of ``value`` declared in ``schema``, every required one present, down the arrays and objects."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _conforms(spec, option, value, where)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: no anyOf option fits: {errors}")
    if isinstance(value, dict):
        assert schema.get("type") == "object" and "properties" in schema, (where, schema)
        assert set(value) <= set(schema["properties"]), (where, set(value) - set(schema["properties"]))
        assert set(schema.get("required", ())) <= set(value), (where, set(schema.get("required", ())) - set(value))
        for key, item in value.items():
            _conforms(spec, schema["properties"][key], item, f"{where}.{key}")
    elif isinstance(value, list):
        assert schema.get("type") == "array", (where, schema)
        for i, item in enumerate(value):
            _conforms(spec, schema["items"], item, f"{where}[{i}]")
    elif value is not None:
        kind = {str: "string", int: "integer", float: "number", bool: "boolean"}[type(value)]
        assert schema.get("type") in (kind, "number" if kind == "integer" else kind), (where, schema, value)


def _answered(served_world) -> dict[str, dict]:
    """A request per route that the service answers 200: decisions for people with a consent that no other test
    decides for, rows that are refused (nothing stored)."""
    import pandas as pd

    users = pd.read_parquet(served_world[0] / "users.parquet")
    a, b, c = users.loc[users["consent"].map(len) > 0, "user_id"].iloc[400:403]
    now = "2026-11-01T00:00:00Z"             # as tests/serving/test_service.py decides
    return {"/recommend": {"user_id": a, "k": 3, "now": now},
            "/recommend_batch": {"requests": [{"user_id": b, "now": now}, {"user_id": c, "k": 2, "now": now}]},
            "/feedback": {"events": [{"event_id": "openapi-1"}]},
            "/users": {"users": [{"user_id": "openapi-u1", "timezone": "Mars/Olympus"}]},
            "/messages": {"messages": [{"message_id": " "}]}}


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_declares_its_typed_answer_and_its_description(client, served_world, spec, path) -> None:
    from serving.service import NbmService

    operation = spec["paths"][path]["post"]
    answer = client.post(path, json=_answered(served_world)[path])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    declared = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert _resolve(spec, declared).get("properties"), declared
    _conforms(spec, declared, body, path)
    # The nested parts were there to be checked: a decision's items, a refused row's reason.
    assert any(r["items"] for r in body.get("results", [body])) if "recommend" in path else body["rejected"], body
    doc = inspect.cleandoc(NbmService.apis[path.lstrip("/")].func.__doc__)
    assert operation["description"] == doc and operation["summary"] == doc.split("\n\n")[0].replace("\n", " ")
    assert len(operation["summary"]) > 20


def test_the_openapi_keeps_no_bentoml_copies_of_the_answers(spec) -> None:
    names = set(spec["components"]["schemas"])
    assert not {n for n in names if n.endswith("ResponseIODescriptor")}, names
    assert not names & {"InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_the_docs_page_loads_nothing_from_elsewhere(client, path) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "googletagmanager" not in html.lower() and "gtm" not in html.lower()
    assert not re.search(r"(?:https?:)?//", html), "an address elsewhere"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("./"), asset
        fetched = client.get("/" + asset[2:])
        assert fetched.status_code == 200, asset
        assert b"googletagmanager" not in fetched.content
    assert "validatorUrl: null" in html                      # Swagger UI would send the spec's address out
    assert "./docs.json" in html
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-eval" not in policy
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 1                                 # the inline script is allowed by its hash only
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy and "script-src 'self' 'sha256-" in policy
    assert client.head(path).status_code == 200


def test_the_docs_page_asks_for_a_key_like_the_openapi(keyed) -> None:
    assert keyed.get("/").status_code == 401
    assert keyed.get("/", headers={"X-API-Key": READ}).status_code == 200
