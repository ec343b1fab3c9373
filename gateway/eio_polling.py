"""Engine.IO HTTP long-polling payloads (v3 and v4), pure: bytes in, packets out, and back.

A polling request or response carries a *payload*: one or more Engine.IO packets.

* **v4** (engine.io-parser 5, socket.io-client 3+/4): packets joined by the record separator
  ``\\x1e``, which JSON text never contains unescaped.
* **v3** (engine.io-parser 2, socket.io-client 2 / sails.io.js 1.2.1): each packet prefixed by
  its length and a colon, ``<length>:<packet>``, the length counted as JavaScript counts a
  string's ``length``: in UTF-16 code units (a character outside the BMP counts 2). An empty
  payload is ``0:``. Binary payloads (``b64=1`` or XHR2 binary) are not supported.

Packets are the text of :mod:`gateway.socketio` (``42[...]``, ``2``, ``3probe``...) as UTF-8
bytes. Decoding untrusted payloads raises :class:`PayloadError` and never echoes their content.

The polling shell keeps outbound packets as payload *fragments*: :func:`fragment` makes one,
and joining fragments with :func:`separator` yields a valid payload whether a fragment holds one
packet or several (so the send queue can join them as it joins WebSocket frames).
"""

from __future__ import annotations

__all__ = [
    "NOOP",
    "PayloadError",
    "decode_payload",
    "encode_payload",
    "fragment",
    "separator",
    "split_fragments",
]

NOOP = b"6"  # Engine.IO noop: answers a poll with nothing to say (drains it on upgrade)

_RS = b"\x1e"
_MAX_LENGTH_DIGITS = 10  # a v3 length prefix longer than this is garbage


class PayloadError(Exception):
    """A client payload that does not parse (lower-case reason, no content echoed)."""


def separator(eio: int) -> bytes:
    """What joins fragments into a payload."""
    return _RS if eio == 4 else b""


def _utf16_length(packet: bytes) -> int:
    if packet.isascii():
        return len(packet)
    return len(packet.decode("utf-8").encode("utf-16-le")) // 2


def fragment(eio: int, packet: bytes) -> bytes:
    """One packet as a payload fragment: as is for v4, length-prefixed for v3."""
    if eio == 4:
        return packet
    return b"%d:%s" % (_utf16_length(packet), packet)


def encode_payload(eio: int, packets: list[bytes]) -> bytes:
    """A whole payload of ``packets`` (at least one for v4; v3 encodes none as ``0:``)."""
    if eio == 3 and not packets:
        return b"0:"
    return separator(eio).join(fragment(eio, p) for p in packets)


def decode_payload(eio: int, body: bytes) -> list[str]:
    """The packets of a client's POST body, as text (what :func:`gateway.socketio.parse`
    takes). Raises :class:`PayloadError` for a payload that is not the version's encoding."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not utf-8") from None
    if not text:
        raise PayloadError("empty payload")
    if eio == 4:
        packets = text.split("\x1e")
        for packet in packets:
            if not packet:
                raise PayloadError("empty packet in payload")
            if packet[0] == "b":
                raise PayloadError("binary packets are not supported")
        return packets
    return _decode_v3(text)


def _decode_v3(text: str) -> list[str]:
    # Lengths count UTF-16 code units: index a UTF-16 copy, two bytes per unit.
    units = text.encode("utf-16-le", "surrogatepass")
    end = len(units)
    packets: list[str] = []
    pos = 0
    while pos < end:
        digits = 0
        while pos + 2 * digits < end and units[pos + 2 * digits + 1] == 0:
            char = units[pos + 2 * digits]
            if char == 0x3A:  # ':'
                break
            if not 0x30 <= char <= 0x39 or digits == _MAX_LENGTH_DIGITS:
                raise PayloadError("bad length prefix in payload")
            digits += 1
        colon = pos + 2 * digits
        if colon >= end or units[colon : colon + 2] != b":\x00":
            raise PayloadError("bad length prefix in payload")
        if digits == 0:
            raise PayloadError("bad length prefix in payload")
        length = int(units[pos:colon].decode("utf-16-le"))
        start = colon + 2
        stop = start + 2 * length
        if stop > end:
            raise PayloadError("payload shorter than its length prefix")
        try:
            packet = units[start:stop].decode("utf-16-le")
        except UnicodeDecodeError:
            raise PayloadError("length prefix splits a character") from None
        if packet:
            if packet[0] == "b":
                raise PayloadError("binary packets are not supported")
            packets.append(packet)
        pos = stop
    if not packets:
        raise PayloadError("empty payload")
    return packets


def split_fragments(eio: int, fragments: list[bytes]) -> list[bytes]:
    """The packets of outbound fragments (made by :func:`fragment`, possibly joined), for a
    session that leaves polling for WebSocket: each becomes one WebSocket message."""
    payload = separator(eio).join(fragments)
    if not payload:
        return []
    if eio == 4:
        return payload.split(_RS)
    return [p.encode() for p in _decode_v3(payload.decode("utf-8"))]
