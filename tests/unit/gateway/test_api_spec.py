"""The server API's OpenAPI document (gateway/api_spec.py), checked with real validators.

``openapi-spec-validator`` validates the whole document against the OpenAPI 3.0 schema;
``openapi-schema-validator`` (OpenAPI 3.0 schema objects on top of ``jsonschema``) checks each
request and response schema, and that example bodies the implementation accepts are valid under
them while bodies it refuses are not. The table of operations must be exactly the implemented one
(``gateway.api._RUN``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from gateway import api
from gateway.api_spec import OPERATIONS, Operation, field_problem, openapi_document

DOC = openapi_document("1.2.3")
ERROR_STATUSES = {"400", "401", "403", "404", "413", "429", "503", "504"}

# A valid body for each operation (what the integration test sends, with made-up ids), and
# bodies the gateway refuses with 400 that the schema must refuse too.
VALID: dict[str, list[dict[str, Any]]] = {
    "broadcast": [
        {"rooms": "lobby"},
        {"rooms": ["a", "b"], "event": "greet", "data": {"text": "hi"}, "omit": "s1"},
        {"rooms": "a", "data": None, "omit": ["s1", "s2"]},
        {"rooms": "a", "receipt": True},
        {"rooms": ["a", "b"], "receipt": True, "confirm": True, "confirm_timeout": 0.5},
        {"rooms": "a", "confirm": True, "confirm_timeout": 60},
    ],
    "blast": [
        {},
        {"event": "news", "data": [1, 2], "omit": ["s1"]},
        {"receipt": True, "omit": "s1"},
        {"confirm": True, "confirm_timeout": 2},
    ],
    "join": [{"sockets": "s1", "rooms": "a"}, {"sockets": ["s1", "s2"], "rooms": ["a", "b"]}],
    "leave": [{"sockets": "s1", "rooms": "a"}, {"sockets": [], "rooms": ["a"]}],
    "leave_all": [{"room": "a"}],
    "add_room_members_to_rooms": [{"source": "a", "rooms": "b"}, {"source": "s1", "rooms": ["b"]}],
    "remove_room_members_from_rooms": [{"source": "a", "rooms": ["b", "c"]}],
    "count": [{"room": "a"}],
    "members": [{"room": "a"}],
    "rooms": [{"socket": "s1"}],
    "presence": [{"room": "a"}],
    "presence_stats": [{"room": "a"}],
    "set_presence": [
        {"socket": "s1", "user": "ada"},
        {"socket": "s1", "user": "ada", "meta": {"tab": 1}},
        {"socket": "s1", "user": None},
    ],
    "track_presence": [{"room": "a"}, {"room": "a", "enabled": False}],
    "publish": [
        {"model": "user", "ids": 1, "data": {"x": 1}},
        {"model": "user", "ids": ["a", 2], "data": "text", "omit": "s1"},
    ],
    "publish_create": [{"model": "user", "record": {"id": 7, "name": "Ann"}, "omit": "s1"}],
    "publish_update": [
        {"model": "user", "id": 7, "changes": {"name": "Bo"}},
        {"model": "user", "id": "7", "changes": {}, "previous": {"name": "Ann"}, "omit": "s1"},
    ],
    "publish_destroy": [{"model": "user", "id": 7}, {"model": "user", "id": 7, "previous": {}}],
    "publish_add": [{"model": "user", "id": 7, "attribute": "pets", "added_id": 3}],
    "publish_remove": [{"model": "user", "id": "7", "attribute": "pets", "removed_id": "3"}],
}

INVALID: list[tuple[str, dict[str, Any]]] = [
    ("broadcast", {}),  # missing rooms
    ("broadcast", {"rooms": "a", "bogus": 1}),  # unknown field
    ("broadcast", {"rooms": []}),  # no room
    ("broadcast", {"rooms": ""}),  # empty room name
    ("broadcast", {"rooms": 5}),
    ("broadcast", {"rooms": "a", "event": ""}),
    ("broadcast", {"rooms": "a", "event": 5}),
    ("blast", {"rooms": "a"}),
    ("join", {"sockets": "s1"}),
    ("join", {"rooms": "a"}),
    ("join", {"sockets": "", "rooms": "a"}),
    ("leave_all", {"room": ["a"]}),
    ("count", {"room": None}),
    ("rooms", {"socket": 5}),
    ("broadcast", {"rooms": "a", "receipt": "yes"}),
    ("broadcast", {"rooms": "a", "confirm": 1}),
    ("broadcast", {"rooms": "a", "confirm": True, "confirm_timeout": 0}),
    ("broadcast", {"rooms": "a", "confirm": True, "confirm_timeout": 61}),
    ("blast", {"confirm_timeout": "5"}),
    ("presence", {}),
    ("presence", {"room": ""}),
    ("presence_stats", {"room": ["a"]}),
    ("set_presence", {"socket": "s1"}),  # user is required (null clears)
    ("set_presence", {"user": "ada"}),
    ("set_presence", {"socket": "s1", "user": ""}),
    ("set_presence", {"socket": "s1", "user": 5}),
    ("track_presence", {"room": "a", "enabled": "no"}),
    ("track_presence", {"enabled": True}),
    ("publish", {"model": "user", "ids": True, "data": 1}),
    ("publish", {"model": "user", "ids": 1.5, "data": 1}),
    ("publish", {"model": "", "ids": 1, "data": 1}),
    ("publish", {"model": "user", "ids": 1}),  # data is required
    ("publish_create", {"model": "user", "record": [1]}),
    ("publish_update", {"model": "user", "id": {"a": 1}, "changes": {}}),
    ("publish_update", {"model": "user", "id": 1, "changes": "x"}),
    ("publish_destroy", {"model": "user", "id": False}),
    ("publish_add", {"model": "user", "id": 1, "attribute": "", "added_id": 2}),
    ("publish_remove", {"model": "user", "id": 1, "attribute": "pets"}),
]


def op_of(name: str) -> dict[str, Any]:
    return DOC["paths"][f"/api/{name}"]["post"]  # type: ignore[no-any-return]


def schema_validator(schema: dict[str, Any]) -> OAS30Validator:
    """A validator for one schema object of DOC, with DOC's components reachable by $ref."""
    OAS30Validator.check_schema(schema)
    return OAS30Validator({**schema, "components": DOC["components"]})


def test_document_validates_as_openapi_3_0() -> None:
    validate(DOC)  # raises OpenAPIValidationError with the path of the first problem
    assert DOC["openapi"].startswith("3.0.")
    assert list(OpenAPIV30SpecValidator(DOC).iter_errors()) == []


def test_document_is_plain_json_and_carries_the_version() -> None:
    assert json.loads(json.dumps(DOC)) == DOC
    assert DOC["info"]["version"] == "1.2.3"
    assert openapi_document("9.9")["info"]["version"] == "9.9"


def test_the_validator_is_real() -> None:
    """The same checks fail on a broken document (so a pass above means something)."""
    broken = copy.deepcopy(DOC)
    del broken["paths"]["/api/join"]["post"]["responses"]
    with pytest.raises(Exception, match="responses"):
        validate(broken)
    broken = copy.deepcopy(DOC)
    post = broken["paths"]["/api/join"]["post"]
    post["requestBody"]["content"]["application/json"]["schema"]["required"] = []
    with pytest.raises(Exception, match="required"):
        validate(broken)


def test_operations_are_exactly_the_implemented_ones() -> None:
    assert set(OPERATIONS) == set(api._RUN)
    assert set(DOC["paths"]) == {f"/api/{name}" for name in api._RUN}


def test_sdk_operations_of_the_design_are_all_there() -> None:
    """architecture §6: the SDK's operations, plus the Resourceful PubSub helpers."""
    sdk = {
        "broadcast", "blast", "join", "leave", "leave_all", "add_room_members_to_rooms",
        "remove_room_members_from_rooms", "count", "members", "rooms", "publish",
    }  # fmt: skip
    models = {f"publish_{v}" for v in ("create", "update", "destroy", "add", "remove")}
    presence = {"presence", "presence_stats", "set_presence", "track_presence"}  # issue 8
    assert set(OPERATIONS) == sdk | models | presence


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_is_documented_with_request_and_response_schemas(name: str) -> None:
    spec: Operation = OPERATIONS[name]
    assert spec.name == name
    assert spec.summary.strip()
    post = op_of(name)
    assert set(DOC["paths"][f"/api/{name}"]) == {"post"}
    assert post["operationId"] == name
    assert post["summary"] == spec.summary
    assert post["security"] == [{"bearer": []}]
    assert DOC["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}

    body = post["requestBody"]
    assert body["required"] is True
    request_schema = body["content"]["application/json"]["schema"]
    assert request_schema == spec.body
    schema_validator(request_schema)
    assert request_schema["type"] == "object"
    # The gateway refuses unknown fields, so the document must say so.
    assert request_schema["additionalProperties"] is False
    assert set(request_schema.get("required", [])) <= set(request_schema["properties"])

    responses = post["responses"]
    assert set(responses) == {"200"} | ERROR_STATUSES
    ok = responses["200"]["content"]["application/json"]["schema"]
    assert ok == spec.result
    schema_validator(ok)
    assert ok["type"] == "object" and ok["additionalProperties"] is False
    for status in ERROR_STATUSES:
        assert responses[status]["description"].strip()
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


def test_error_schema_is_the_error_body_of_every_surface() -> None:
    error = schema_validator({"$ref": "#/components/schemas/Error"})
    error.validate({"error": "unauthorized", "message": "wrong api key"})
    bad: Any
    for bad in ({"error": "x"}, {"message": "x"}, {"error": 1, "message": "x"}, []):
        assert not error.is_valid(bad), bad


@pytest.mark.parametrize(
    ("name", "body"), [(n, b) for n, bodies in sorted(VALID.items()) for b in bodies]
)
def test_valid_bodies_are_valid_under_the_request_schema(name: str, body: dict[str, Any]) -> None:
    schema_validator(OPERATIONS[name].body).validate(body)


def test_every_operation_has_a_valid_example() -> None:
    assert set(VALID) == set(OPERATIONS)


@pytest.mark.parametrize(("name", "body"), INVALID)
def test_refused_bodies_are_invalid_under_the_request_schema(
    name: str, body: dict[str, Any]
) -> None:
    assert not schema_validator(OPERATIONS[name].body).is_valid(body)


@pytest.mark.parametrize(
    ("name", "result", "valid"),
    [
        ("broadcast", {"gateways": 2}, True),
        ("broadcast", {"gateways": -1}, False),
        ("broadcast", {}, False),
        ("broadcast", {"gateways": 2, "sockets": 5, "omitted": 1}, True),
        (
            "blast",
            {"gateways": 2, "sockets": 5, "omitted": 1, "confirmed": 5, "complete": True},
            True,
        ),
        ("broadcast", {"gateways": 2, "sockets": -1, "omitted": 0}, False),
        ("blast", {"gateways": 1, "sockets": 3, "omitted": 0, "complete": "yes"}, False),
        ("blast", {"gateways": 0}, True),
        ("join", {}, True),
        ("join", {"ok": True}, False),
        ("count", {"count": 3}, True),
        ("count", {"count": "3"}, False),
        ("members", {"members": ["s1", "s2"]}, True),
        ("members", {"members": "s1"}, False),
        ("rooms", {"rooms": ["s1", "lobby"]}, True),
        ("rooms", {"rooms": [""]}, False),
        ("publish_create", {}, True),
        ("presence", {"presence": {}}, True),
        ("presence", {"presence": {"ada": {"connections": 2, "meta": {"tab": 1}}}}, True),
        ("presence", {"presence": {"ada": {"connections": 1, "meta": None}}}, True),
        ("presence", {"presence": {"ada": {"connections": 0, "meta": None}}}, False),
        ("presence", {"presence": {"ada": {"connections": 1}}}, False),
        ("presence", {"ada": {"connections": 1, "meta": None}}, False),
        ("presence_stats", {"connections": 3, "users": 2}, True),
        ("presence_stats", {"connections": 3}, False),
        ("set_presence", {}, True),
        ("track_presence", {}, True),
    ],
)
def test_response_schemas(name: str, result: dict[str, Any], valid: bool) -> None:
    assert schema_validator(OPERATIONS[name].result).is_valid(result) is valid


def test_broken_schema_is_caught_by_check_schema() -> None:
    # jsonschema.exceptions.SchemaError, found by the OpenAPI 3.0 meta-schema.
    with pytest.raises(Exception, match="'rooms' is not of type 'array'"):
        schema_validator({"type": "object", "required": "rooms"})


# --- field_problem: what a refused body says ---------------------------------------------------


def test_right_fields_have_no_problem() -> None:
    assert field_problem("broadcast", ["rooms", "data"]) is None
    assert field_problem("publish_update", ["model", "id", "changes", "previous"]) is None


@pytest.mark.parametrize(
    ("op", "fields", "says"),
    [
        # Sails habit: `data` where publish_update wants `changes`.
        ("publish_update", ["model", "id", "data"], "unknown fields: data (did you mean changes?)"),
        ("broadcast", ["room", "data"], "unknown fields: room (did you mean rooms?)"),
        ("broadcast", ["rooms", "bogus", "extra"], "unknown fields: bogus, extra;"),
        ("join", [], "missing fields: sockets, rooms;"),
    ],
)
def test_problems_name_the_expected_field(op: str, fields: list[str], says: str) -> None:
    problem = field_problem(op, fields)
    assert problem is not None and says in problem
    # ... and list every field the operation takes, the required ones marked.
    props = OPERATIONS[op].body["properties"]
    assert problem.endswith(
        f"{op} takes "
        + ", ".join(
            f + (" (required)" if f in OPERATIONS[op].body.get("required", []) else "")
            for f in props
        )
    )
