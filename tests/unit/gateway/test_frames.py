"""gateway.frames: server WebSocket frames (RFC 6455 §5.2), parsed back header field by field."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest

from gateway import frames


@dataclasses.dataclass(frozen=True)
class Header:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    length: int
    size: int  # header bytes


def parse_header(frame: bytes) -> Header:
    """A reference RFC 6455 header parser, independent of the code under test."""
    b0, b1 = frame[0], frame[1]
    length, size = b1 & 0x7F, 2
    if length == 126:
        (length,) = struct.unpack(">H", frame[2:4])
        size = 4
        assert length >= 126, "16-bit length used for a length that fits in 7 bits"
    elif length == 127:
        (length,) = struct.unpack(">Q", frame[2:10])
        size = 10
        assert length >= 1 << 16, "64-bit length used for a length that fits in 16 bits"
        assert length < 1 << 63, "most significant bit of a 64-bit length must be 0"
    return Header(
        fin=bool(b0 & 0x80),
        rsv=(b0 >> 4) & 0x7,
        opcode=b0 & 0x0F,
        masked=bool(b1 & 0x80),
        length=length,
        size=size,
    )


# (payload length, header size, the 7-bit length field)
LENGTHS: list[Any] = [
    pytest.param(0, 2, 0, id="0"),
    pytest.param(1, 2, 1, id="1"),
    pytest.param(125, 2, 125, id="125-last-7-bit"),
    pytest.param(126, 4, 126, id="126-first-16-bit"),
    pytest.param(127, 4, 126, id="127"),
    pytest.param(65_535, 4, 126, id="65535-last-16-bit"),
    pytest.param(65_536, 10, 127, id="65536-first-64-bit"),
    pytest.param(70_000, 10, 127, id="70000"),
]


@pytest.mark.parametrize(("n", "header_size", "len7"), LENGTHS)
def test_text_frame_lengths(n: int, header_size: int, len7: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    frame = frames.text_frame(payload)
    header = parse_header(frame)
    assert header == Header(fin=True, rsv=0, opcode=0x1, masked=False, length=n, size=header_size)
    assert frame[1] & 0x7F == len7
    assert frame[header.size :] == payload
    assert len(frame) == header_size + n


def test_text_frame_first_byte_and_short_header() -> None:
    assert frames.text_frame(b"hi") == b"\x81\x02hi"
    assert frames.text_frame(b"") == b"\x81\x00"
    assert frames.text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert frames.text_frame(b"x" * 65_536)[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


CLOSES: list[Any] = [
    pytest.param(1000, "", b"\x03\xe8", id="normal-no-reason"),
    pytest.param(1001, "going away", b"\x03\xe9going away", id="going-away"),
    pytest.param(1008, "malformed packet", b"\x03\xf0malformed packet", id="policy"),
    pytest.param(1009, "", b"\x03\xf1", id="too-big"),
    pytest.param(4001, "slow consumer", b"\x0f\xa1slow consumer", id="slow-consumer"),
    pytest.param(4003, "é", b"\x0f\xa3" + "é".encode(), id="utf8-reason"),
    pytest.param(1000, "x" * 123, b"\x03\xe8" + b"x" * 123, id="123-byte-reason-fits"),
    pytest.param(1000, "x" * 200, b"\x03\xe8" + b"x" * 123, id="long-reason-truncated"),
    # The 123-byte cut would fall inside a multi-byte character: drop the whole character.
    pytest.param(1000, "é" * 70, b"\x03\xe8" + "é".encode() * 61,
                 id="truncated-on-a-character-boundary-2-byte"),
    pytest.param(1000, "x" + "€" * 50, b"\x03\xe8" + b"x" + "€".encode() * 40,
                 id="truncated-on-a-character-boundary-3-byte"),
    pytest.param(1000, "ab" + "🎉" * 40, b"\x03\xe8" + b"ab" + "🎉".encode() * 30,
                 id="truncated-on-a-character-boundary-4-byte"),
    pytest.param(1000, "x" + "é" * 70, b"\x03\xe8" + b"x" + "é".encode() * 61,
                 id="cut-falls-between-characters"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "reason", "payload"), CLOSES)
def test_close_frame(code: int, reason: str, payload: bytes) -> None:
    frame = frames.close_frame(code, reason)
    header = parse_header(frame)
    assert header == Header(fin=True, rsv=0, opcode=0x8, masked=False, length=len(payload), size=2)
    assert frame[2:] == payload
    assert header.length <= 125  # a control frame's payload is at most 125 bytes
    (parsed_code,) = struct.unpack(">H", frame[2:4])
    assert parsed_code == code
    frame[4:].decode("utf-8")  # the reason must be valid UTF-8 (RFC 6455 §5.5.1)


def test_close_frame_default_reason() -> None:
    assert frames.close_frame(1001) == b"\x88\x02\x03\xe9"
