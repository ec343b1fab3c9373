"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once and written as bytes.

Pure: a delivery is framed once per protocol and the same bytes are queued for every recipient,
so the per-socket cost is a list append. Server frames are never masked and we never negotiate
compression, so RSV bits stay zero.
"""

from __future__ import annotations

import struct

__all__ = ["PING_FRAME", "close_frame", "text_frame"]

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9

# A ping with no payload; the same bytes for every connection.
PING_FRAME = bytes((0x80 | _OP_PING, 0))
_FIN = 0x80


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 1 << 16:
        header = struct.pack(">BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack(">BBQ", _FIN | opcode, 127, n)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """One unfragmented text frame carrying ``payload`` (UTF-8 JSON)."""
    return _frame(_OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    # A control frame carries at most 125 bytes; cut the reason on a character boundary so it
    # stays valid UTF-8 (RFC 6455 §5.5.1).
    reason_bytes = reason.encode()[:123].decode(errors="ignore").encode()
    return _frame(_OP_CLOSE, struct.pack(">H", code) + reason_bytes)
