"""gateway.plainws: the /ws JSON codec (architecture §4), one frame in, one op or FrameError out.

Every error path is checked for its status, its code and whether the client's ``ref`` survives
(a reply to the ref, or an ``error`` op when there is none); every encoder for its exact bytes and
for being valid JSON.
"""

from __future__ import annotations

import http
import json
import re
from typing import Any

import pytest

from gateway import plainws
from gateway.plainws import BroadcastOp, FrameError, MembershipOp, RequestOp

# --- parse: good frames --------------------------------------------------------------------------

GOOD: list[Any] = [
    pytest.param(
        {"op": "join", "ref": 1, "room": "lobby"},
        MembershipOp(1, ["lobby"], leave=False),
        id="join-room",
    ),
    pytest.param(
        {"op": "join", "ref": 2, "rooms": ["a", "b:c"]},
        MembershipOp(2, ["a", "b:c"], leave=False),
        id="join-rooms-list",
    ),
    pytest.param(
        {"op": "join", "ref": 3, "room": ["a", "b"]},
        MembershipOp(3, ["a", "b"], leave=False),
        id="join-room-list",
    ),
    pytest.param(
        {"op": "join", "ref": 4, "room": "r", "rooms": ["ignored"]},
        MembershipOp(4, ["r"], leave=False),
        id="join-room-wins-over-rooms",
    ),
    pytest.param(
        {"op": "join", "ref": "abc", "room": "r"},
        MembershipOp("abc", ["r"], leave=False),
        id="join-string-ref",
    ),
    pytest.param(
        {"op": "join", "ref": 0, "room": "r"},
        MembershipOp(0, ["r"], leave=False),
        id="join-ref-zero",
    ),
    pytest.param(
        {"op": "join", "ref": -5, "room": "r"},
        MembershipOp(-5, ["r"], leave=False),
        id="join-negative-ref",
    ),
    pytest.param(
        {"op": "join", "ref": "", "room": "r"},
        MembershipOp("", ["r"], leave=False),
        id="join-empty-string-ref",
    ),
    pytest.param(
        {"op": "leave", "ref": 5, "room": "lobby"},
        MembershipOp(5, ["lobby"], leave=True),
        id="leave-room",
    ),
    pytest.param(
        {"op": "leave", "ref": 6, "rooms": ["a", "b"], "extra": True},
        MembershipOp(6, ["a", "b"], leave=True),
        id="leave-rooms-extra-keys-ignored",
    ),
    pytest.param(
        {"op": "broadcast", "rooms": "r"},
        BroadcastOp(None, ["r"], "message", b"null", echo=False),
        id="broadcast-minimal-defaults",
    ),
    pytest.param(
        {"op": "broadcast", "ref": 7, "rooms": ["a", "b"], "event": "chat", "data": {"x": 1}},
        BroadcastOp(7, ["a", "b"], "chat", b'{"x":1}', echo=False),
        id="broadcast-full",
    ),
    pytest.param(
        {"op": "broadcast", "ref": "b1", "rooms": "r", "echo": True, "data": [1, "é", None]},
        BroadcastOp("b1", ["r"], "message", '[1,"é",null]'.encode(), echo=True),
        id="broadcast-echo-utf8-data",
    ),
    pytest.param(
        {"op": "broadcast", "ref": 8, "rooms": "r", "echo": False, "data": "s"},
        BroadcastOp(8, ["r"], "message", b'"s"', echo=False),
        id="broadcast-echo-false-string-data",
    ),
    pytest.param(
        {"op": "broadcast", "ref": True, "rooms": "r"},
        BroadcastOp(None, ["r"], "message", b"null", echo=False),
        id="broadcast-bool-ref-unusable",
    ),
    pytest.param(
        {"op": "broadcast", "ref": 1.5, "rooms": "r"},
        BroadcastOp(None, ["r"], "message", b"null", echo=False),
        id="broadcast-float-ref-unusable",
    ),
    pytest.param(
        {"op": "broadcast", "ref": "\ud800", "rooms": "r"},
        BroadcastOp(None, ["r"], "message", b"null", echo=False),
        id="broadcast-lone-surrogate-ref-unusable",
    ),
    pytest.param(
        {
            "op": "request",
            "ref": 9,
            "method": "POST",
            "url": "/chat/join",
            "data": {"room": "r"},
            "headers": {"x-a": "b"},
        },
        RequestOp(9, "POST", "/chat/join", b'{"room":"r"}', b'{"x-a":"b"}'),
        id="request-full",
    ),
    pytest.param(
        {"op": "request", "ref": 10, "url": "/"},
        RequestOp(10, "GET", "/", b"null", b"{}"),
        id="request-defaults",
    ),
    pytest.param(
        {"op": "request", "ref": "q", "method": "delete", "url": "/x?y=1"},
        RequestOp("q", "DELETE", "/x?y=1", b"null", b"{}"),
        id="request-lower-case-method",
    ),
]


@pytest.mark.parametrize(("frame", "expected"), GOOD)
def test_parse_good_frames(frame: dict[str, Any], expected: plainws.Op) -> None:
    assert plainws.parse(json.dumps(frame)) == expected


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_parse_request_accepts_every_method(method: str) -> None:
    op = plainws.parse(json.dumps({"op": "request", "ref": 1, "method": method, "url": "/a"}))
    assert op == RequestOp(1, method, "/a", b"null", b"{}")


def test_broadcast_data_is_re_encoded_compactly() -> None:
    op = plainws.parse('{ "op" : "broadcast", "rooms" : "r", "data" : { "a" : [ 1 , 2 ] } }')
    assert isinstance(op, BroadcastOp)
    assert op.data == b'{"a":[1,2]}'


def test_whitespace_around_the_frame_is_fine() -> None:
    assert plainws.parse(' \n{"op":"join","ref":1,"room":"r"}\t') == MembershipOp(1, ["r"], False)


# --- parse: errors -------------------------------------------------------------------------------

NO_REF = None
DEEP = "[" * 100_000

# (frame text, status, code, ref the error is reported against)
BAD: list[Any] = [
    # not a json object: the ref cannot be read, so it is never kept
    pytest.param("", 400, "bad_request", NO_REF, id="empty"),
    pytest.param("not json", 400, "bad_request", NO_REF, id="garbage"),
    pytest.param('{"op":"join","ref":1,', 400, "bad_request", NO_REF, id="truncated"),
    pytest.param(DEEP, 400, "bad_request", NO_REF, id="nesting-too-deep"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","data":NaN}', 400, "bad_request",
                 NO_REF, id="nan-is-not-json"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","data":Infinity}', 400, "bad_request",
                 NO_REF, id="infinity-is-not-json"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","data":[-Infinity]}', 400,
                 "bad_request", NO_REF, id="minus-infinity-is-not-json"),
    pytest.param("[]", 400, "bad_request", NO_REF, id="array"),
    pytest.param('[{"op":"join","ref":1,"room":"r"}]', 400, "bad_request", NO_REF,
                 id="op-in-array"),
    pytest.param("1", 400, "bad_request", NO_REF, id="number"),
    pytest.param('"join"', 400, "bad_request", NO_REF, id="string"),
    pytest.param("null", 400, "bad_request", NO_REF, id="null"),
    # op
    pytest.param("{}", 400, "bad_request", NO_REF, id="empty-object"),
    pytest.param('{"ref":1}', 400, "bad_request", 1, id="missing-op-keeps-ref"),
    pytest.param('{"op":null,"ref":"r1"}', 400, "bad_request", "r1", id="null-op"),
    pytest.param('{"op":5,"ref":1}', 400, "bad_request", 1, id="number-op"),
    pytest.param('{"op":"subscribe","ref":1}', 400, "bad_request", 1, id="unknown-op"),
    pytest.param('{"op":"JOIN","ref":1,"room":"r"}', 400, "bad_request", 1,
                 id="op-is-case-sensitive"),
    pytest.param('{"op":"nope"}', 400, "bad_request", NO_REF, id="unknown-op-no-ref"),
    # join / leave
    pytest.param('{"op":"join","room":"r"}', 400, "bad_request", NO_REF, id="join-without-ref"),
    pytest.param('{"op":"leave","room":"r"}', 400, "bad_request", NO_REF, id="leave-without-ref"),
    pytest.param('{"op":"join","ref":null,"room":"r"}', 400, "bad_request", NO_REF,
                 id="join-null-ref"),
    pytest.param('{"op":"join","ref":true,"room":"r"}', 400, "bad_request", NO_REF,
                 id="join-bool-ref"),
    pytest.param('{"op":"join","ref":1.0,"room":"r"}', 400, "bad_request", NO_REF,
                 id="join-float-ref"),
    pytest.param('{"op":"join","ref":[1],"room":"r"}', 400, "bad_request", NO_REF,
                 id="join-list-ref"),
    pytest.param('{"op":"join","ref":{"a":1},"room":"r"}', 400, "bad_request", NO_REF,
                 id="join-object-ref"),
    pytest.param('{"op":"join","ref":"\\ud800","room":"r"}', 400, "bad_request", NO_REF,
                 id="join-lone-surrogate-ref"),
    pytest.param('{"op":"join","ref":1}', 400, "bad_request", 1, id="join-without-room"),
    pytest.param('{"op":"join","ref":1,"room":null}', 400, "bad_request", 1, id="join-null-room"),
    pytest.param('{"op":"join","ref":1,"room":7}', 400, "bad_request", 1, id="join-number-room"),
    pytest.param('{"op":"join","ref":1,"room":{}}', 400, "bad_request", 1, id="join-object-room"),
    pytest.param('{"op":"join","ref":1,"rooms":[]}', 400, "bad_request", 1, id="join-empty-list"),
    pytest.param('{"op":"join","ref":1,"room":""}', 400, "invalid_room", 1, id="join-empty-room"),
    pytest.param('{"op":"join","ref":2,"rooms":["ok",""]}', 400, "invalid_room", 2,
                 id="join-one-bad-room-in-list"),
    pytest.param('{"op":"join","ref":1,"rooms":["ok",3]}', 400, "invalid_room", 1,
                 id="join-number-in-list"),
    pytest.param(json.dumps({"op": "leave", "ref": 1, "room": "x" * 257}), 400, "invalid_room", 1,
                 id="leave-room-too-long"),
    pytest.param('{"op":"leave","ref":"k","room":"a\\nb"}', 400, "invalid_room", "k",
                 id="leave-control-char"),
    pytest.param('{"op":"join","ref":1,"room":"\\ud800"}', 400, "invalid_room", 1,
                 id="join-lone-surrogate-room"),
    # broadcast
    pytest.param('{"op":"broadcast","ref":1}', 400, "bad_request", 1, id="broadcast-no-rooms"),
    pytest.param('{"op":"broadcast"}', 400, "bad_request", NO_REF, id="broadcast-no-rooms-no-ref"),
    pytest.param('{"op":"broadcast","ref":1,"room":"r"}', 400, "bad_request", 1,
                 id="broadcast-room-singular-is-not-rooms"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":{"a":1}}', 400, "bad_request", 1,
                 id="broadcast-rooms-object"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":5}', 400, "bad_request", 1,
                 id="broadcast-rooms-number"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":[]}', 400, "bad_request", 1,
                 id="broadcast-rooms-empty-list"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":["a",""]}', 400, "invalid_room", 1,
                 id="broadcast-one-bad-room"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","event":""}', 400, "bad_request", 1,
                 id="broadcast-empty-event"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","event":null}', 400, "bad_request", 1,
                 id="broadcast-null-event"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","event":5}', 400, "bad_request", 1,
                 id="broadcast-number-event"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","event":"\\ud800"}', 400, "bad_request",
                 1, id="broadcast-lone-surrogate-event"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","echo":"yes"}', 400, "bad_request", 1,
                 id="broadcast-string-echo"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","echo":1}', 400, "bad_request", 1,
                 id="broadcast-int-echo"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","echo":null}', 400, "bad_request", 1,
                 id="broadcast-null-echo"),
    pytest.param('{"op":"broadcast","ref":1,"rooms":"r","data":"\\udfff"}', 400, "bad_request",
                 1, id="broadcast-lone-surrogate-data"),
    pytest.param('{"op":"broadcast","rooms":"r","data":{"\\ud800":1}}', 400, "bad_request",
                 NO_REF, id="broadcast-lone-surrogate-key-no-ref"),
    # request
    pytest.param('{"op":"request","url":"/a"}', 400, "bad_request", NO_REF,
                 id="request-without-ref"),
    pytest.param('{"op":"request","ref":1}', 400, "bad_request", 1, id="request-without-url"),
    pytest.param('{"op":"request","ref":1,"url":"a/b"}', 400, "bad_request", 1,
                 id="request-relative-url"),
    pytest.param('{"op":"request","ref":1,"url":""}', 400, "bad_request", 1,
                 id="request-empty-url"),
    pytest.param('{"op":"request","ref":1,"url":5}', 400, "bad_request", 1,
                 id="request-number-url"),
    pytest.param('{"op":"request","ref":1,"url":"http://x/a"}', 400, "bad_request", 1,
                 id="request-absolute-url"),
    pytest.param('{"op":"request","ref":1,"url":"/\\ud800"}', 400, "bad_request", 1,
                 id="request-lone-surrogate-url"),
    pytest.param('{"op":"request","ref":1,"url":"/a","method":"TRACE"}', 400, "bad_request", 1,
                 id="request-unknown-method"),
    pytest.param('{"op":"request","ref":1,"url":"/a","method":""}', 400, "bad_request", 1,
                 id="request-empty-method"),
    pytest.param('{"op":"request","ref":1,"url":"/a","method":null}', 400, "bad_request", 1,
                 id="request-null-method"),
    pytest.param('{"op":"request","ref":1,"url":"/a","method":["GET"]}', 400, "bad_request", 1,
                 id="request-list-method"),
    pytest.param('{"op":"request","ref":1,"url":"/a","headers":null}', 400, "bad_request", 1,
                 id="request-null-headers"),
    pytest.param('{"op":"request","ref":1,"url":"/a","headers":[]}', 400, "bad_request", 1,
                 id="request-list-headers"),
    pytest.param('{"op":"request","ref":1,"url":"/a","headers":"h"}', 400, "bad_request", 1,
                 id="request-string-headers"),
    pytest.param('{"op":"request","ref":1,"url":"/a","headers":{"h":"\\ud800"}}', 400,
                 "bad_request", 1, id="request-lone-surrogate-header"),
    pytest.param('{"op":"request","ref":1,"url":"/a","data":["\\ud800"]}', 400, "bad_request", 1,
                 id="request-lone-surrogate-data"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "status", "code", "ref"), BAD)
def test_parse_errors(text: str, status: int, code: str, ref: plainws.Ref | None) -> None:
    with pytest.raises(FrameError) as info:
        plainws.parse(text)
    exc = info.value
    assert exc.error.status == status
    assert exc.error.code == code
    assert exc.ref == ref
    assert type(exc.ref) is type(ref)  # 1 is not True, "1" is not 1
    assert str(exc) == exc.error.message
    assert exc.error.message[:1].islower()
    # The error body every client-facing surface carries.
    assert exc.error.as_body() == {"error": code, "message": exc.error.message}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "frame is not valid json"),
        ("[]", "frame must be a json object"),
        ("{}", "missing op"),
        ('{"op":"subscribe","ref":1}', "unknown op 'subscribe'"),
        ('{"op":"join","room":"r"}', "join needs a ref (integer or string)"),
        ('{"op":"request","url":"/"}', "request needs a ref (integer or string)"),
    ],
)
def test_parse_error_messages(text: str, message: str) -> None:
    with pytest.raises(FrameError, match=f"^{re.escape(message)}$"):
        plainws.parse(text)


def test_error_does_not_echo_payload() -> None:
    secret = "s3cr3t-token"
    cases = [
        f'{{"op":"join","ref":1,"room":"{secret}\\n"}}',
        f'{{"op":"request","ref":1,"url":"{secret}"}}',
        f'{{"op":"broadcast","ref":1,"rooms":"r","event":5,"data":"{secret}"}}',
        f'{{"op":"join","ref":1,"room":"r", "x": {secret}',
    ]
    for text in cases:
        with pytest.raises(FrameError) as info:
            plainws.parse(text)
        assert secret not in info.value.error.message, text


# --- encoders ------------------------------------------------------------------------------------


def test_dumps_is_compact_utf8() -> None:
    assert plainws.dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()


ENCODED: list[Any] = [
    pytest.param(
        plainws.encode_welcome("sid_1"),
        b'{"op":"welcome","socket":"sid_1"}',
        {"op": "welcome", "socket": "sid_1"},
        id="welcome",
    ),
    pytest.param(
        plainws.encode_reply(7, 200, {}),
        b'{"op":"reply","ref":7,"statusCode":200,"body":{},"headers":{}}',
        {"op": "reply", "ref": 7, "statusCode": 200, "body": {}, "headers": {}},
        id="reply-ok",
    ),
    pytest.param(
        plainws.encode_reply("r1", 404, {"error": "no_such_socket", "message": "gone"}),
        b'{"op":"reply","ref":"r1","statusCode":404,'
        b'"body":{"error":"no_such_socket","message":"gone"},"headers":{}}',
        {
            "op": "reply",
            "ref": "r1",
            "statusCode": 404,
            "body": {"error": "no_such_socket", "message": "gone"},
            "headers": {},
        },
        id="reply-error-string-ref",
    ),
    pytest.param(
        plainws.encode_reply(0, 200),
        b'{"op":"reply","ref":0,"statusCode":200,"body":null,"headers":{}}',
        {"op": "reply", "ref": 0, "statusCode": 200, "body": None, "headers": {}},
        id="reply-default-body",
    ),
    pytest.param(
        plainws.encode_raw_reply(3, 201, b'{"id":9}', b'{"x-a":"b"}'),
        b'{"op":"reply","ref":3,"statusCode":201,"body":{"id":9},"headers":{"x-a":"b"}}',
        {"op": "reply", "ref": 3, "statusCode": 201, "body": {"id": 9}, "headers": {"x-a": "b"}},
        id="raw-reply",
    ),
    pytest.param(
        plainws.encode_raw_reply("q", 204, b"", b""),
        b'{"op":"reply","ref":"q","statusCode":204,"body":null,"headers":{}}',
        {"op": "reply", "ref": "q", "statusCode": 204, "body": None, "headers": {}},
        id="raw-reply-empty-body-and-headers",
    ),
    pytest.param(
        plainws.encode_raw_reply(1, http.HTTPStatus.NOT_FOUND, b'"x"', b"{}"),
        b'{"op":"reply","ref":1,"statusCode":404,"body":"x","headers":{}}',
        {"op": "reply", "ref": 1, "statusCode": 404, "body": "x", "headers": {}},
        id="raw-reply-enum-status",
    ),
    pytest.param(
        plainws.encode_raw_reply('a"b', 200, b"[1, 2]", b'{ "k" : "v" }'),
        b'{"op":"reply","ref":"a\\"b","statusCode":200,"body":[1, 2],"headers":{ "k" : "v" }}',
        {"op": "reply", "ref": 'a"b', "statusCode": 200, "body": [1, 2], "headers": {"k": "v"}},
        id="raw-reply-splices-verbatim-and-quotes-ref",
    ),
    pytest.param(
        plainws.encode_error(400, {"error": "bad_request", "message": "m"}),
        b'{"op":"error","statusCode":400,"body":{"error":"bad_request","message":"m"}}',
        {"op": "error", "statusCode": 400, "body": {"error": "bad_request", "message": "m"}},
        id="error",
    ),
    pytest.param(
        plainws.encode_event("chat", b'{"a":[1,2]}'),
        b'{"op":"event","event":"chat","data":{"a":[1,2]}}',
        {"op": "event", "event": "chat", "data": {"a": [1, 2]}},
        id="event",
    ),
    pytest.param(
        plainws.encode_event("message", b"null"),
        b'{"op":"event","event":"message","data":null}',
        {"op": "event", "event": "message", "data": None},
        id="event-null-data",
    ),
    pytest.param(
        plainws.encode_event('say "hi"\n', b' { "k" : 1 } '),
        b'{"op":"event","event":"say \\"hi\\"\\n","data": { "k" : 1 } }',
        {"op": "event", "event": 'say "hi"\n', "data": {"k": 1}},
        id="event-escapes-name-splices-data-verbatim",
    ),
    pytest.param(
        plainws.encode_event("ünï", '"ç"'.encode()),
        '{"op":"event","event":"ünï","data":"ç"}'.encode(),
        {"op": "event", "event": "ünï", "data": "ç"},
        id="event-utf8",
    ),
]


@pytest.mark.parametrize(("encoded", "exact", "parsed"), ENCODED)
def test_encoders(encoded: bytes, exact: bytes, parsed: dict[str, Any]) -> None:
    assert encoded == exact
    assert json.loads(encoded) == parsed
    assert list(json.loads(encoded)) == list(parsed)  # key order is part of the shape


def test_encode_event_does_not_reparse_data() -> None:
    data = b'{"big":' + b"1" * 10_000 + b"}"
    encoded = plainws.encode_event("e", data)
    assert encoded.endswith(b',"data":' + data + b"}")


def test_reply_to_a_parse_error_round_trips() -> None:
    """What the handler sends for a FrameError: a reply to the ref, else an error op."""
    for text, op in [('{"op":"join","ref":4}', "reply"), ('{"op":"join"}', "error")]:
        with pytest.raises(FrameError) as info:
            plainws.parse(text)
        exc = info.value
        if exc.ref is not None:
            out = plainws.encode_reply(exc.ref, exc.error.status, exc.error.as_body())
        else:
            out = plainws.encode_error(exc.error.status, exc.error.as_body())
        msg = json.loads(out)
        assert msg["op"] == op
        assert msg["statusCode"] == 400
        assert msg["body"]["error"] == "bad_request"
