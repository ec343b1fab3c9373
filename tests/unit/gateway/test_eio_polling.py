"""gateway.eio_polling: Engine.IO long-polling payloads, v3 (length-prefixed) and v4 (\\x1e)."""

from __future__ import annotations

import pytest

from gateway.eio_polling import (
    NOOP,
    PayloadError,
    decode_payload,
    encode_payload,
    fragment,
    separator,
    split_fragments,
)

EVENT = '42["msg",{"t":"héllo 🌍"}]'  # non-ASCII, and one character outside the BMP


# ------------------------------------------------------------------ v4


def test_v4_payloads_are_packets_joined_by_the_record_separator() -> None:
    assert encode_payload(4, [b"2", b"40"]) == b"2\x1e40"
    assert encode_payload(4, [b"3probe"]) == b"3probe"
    assert fragment(4, EVENT.encode()) == EVENT.encode()
    assert separator(4) == b"\x1e"


@pytest.mark.parametrize(
    ("body", "packets"),
    [
        (b"3", ["3"]),
        (b'40{"token":"t"}\x1e3', ['40{"token":"t"}', "3"]),
        (EVENT.encode(), [EVENT]),
    ],
)
def test_v4_decode(body: bytes, packets: list[str]) -> None:
    assert decode_payload(4, body) == packets


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty payload"),
        (b"3\x1e", "empty packet"),
        (b"\x1e3", "empty packet"),
        (b"bAQID", "binary"),
        (b"3\x1ebAQID", "binary"),
        (b"\xff\xfe", "utf-8"),
    ],
)
def test_v4_bad_payloads(body: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        decode_payload(4, body)


# ------------------------------------------------------------------ v3


def test_v3_lengths_count_utf16_code_units() -> None:
    # JavaScript's "héllo 🌍".length is 8: é is one unit, the globe two.
    packet = EVENT.encode()
    units = len(EVENT) + 1  # one astral character: one more unit than code points
    assert fragment(3, packet) == f"{units}:".encode() + packet
    assert fragment(3, b"40") == b"2:40"
    assert encode_payload(3, [b"0{}", b"40"]) == b"3:0{}2:40"
    assert encode_payload(3, []) == b"0:"
    assert separator(3) == b""


@pytest.mark.parametrize(
    ("body", "packets"),
    [
        (b"1:2", ["2"]),
        (b"6:2probe1:5", ["2probe", "5"]),
        (b"0:1:2", ["2"]),  # an empty packet is skipped, as engine.io-parser 2 does
        (fragment(3, EVENT.encode()) + b"1:3", [EVENT, "3"]),
    ],
)
def test_v3_decode(body: bytes, packets: list[str]) -> None:
    assert decode_payload(3, body) == packets


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty payload"),
        (b"0:", "empty payload"),
        (b"2", "length prefix"),  # no colon
        (b":2", "length prefix"),  # no digits
        (b"x:2", "length prefix"),
        (b"12345678901:2", "length prefix"),  # too many digits
        (b"5:2", "shorter than"),
        (b"1:21:", "length prefix"),  # the second packet's prefix has no digits
        (b"1:2" + b"3", "length prefix"),  # trailing garbage without a colon
        ("1:🌍".encode(), "splits a character"),  # half of a surrogate pair
        (b"4:bAQI", "binary"),
        (b"1:\xff", "utf-8"),
        ("1:é".encode() + b"2", "length prefix"),
    ],
)
def test_v3_bad_payloads(body: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        decode_payload(3, body)


def test_v3_non_ascii_digits_are_not_a_length() -> None:
    with pytest.raises(PayloadError, match="length prefix"):
        decode_payload(3, "\u0661:2".encode())  # ARABIC-INDIC DIGIT ONE


# ------------------------------------------------------------------ fragments


@pytest.mark.parametrize("eio", [3, 4])
def test_fragments_joined_or_not_split_back_into_packets(eio: int) -> None:
    packets = [b"2", EVENT.encode(), NOOP, b"40"]
    one_each = [fragment(eio, p) for p in packets]
    assert split_fragments(eio, one_each) == packets
    # A fragment may hold several packets (a payload pushed back into the queue).
    joined = [separator(eio).join(one_each[:2]), *one_each[2:]]
    assert split_fragments(eio, joined) == packets
    assert decode_payload(eio, separator(eio).join(one_each)) == [p.decode() for p in packets]
    assert split_fragments(eio, []) == []
