"""Router configuration: explicit, grouped, unit-named, frozen. Read from flags in __main__.

Apart from the shell (router/server.py) for the same reason as gateway/config.py: the flags,
their defaults and their units are one thing to read, and nothing here opens a socket.
"""

from __future__ import annotations

import dataclasses

from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES

__all__ = ["RouterConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouterConfig:
    # Endpoints (port 0 picks a free port; READY reports the real one)
    commands: str = "tcp://127.0.0.1:5570"
    fanout: str = "tcp://127.0.0.1:5571"
    # Liveness
    heartbeat_interval_s: float = 1.0
    gateway_timeout_s: float = 5.0
    # Limits
    max_rooms_per_socket: int = 1000
    # One publish's event + JSON data; larger ones are refused with 413 (0: no bound). Keep it
    # under every gateway's --max-send-queue-bytes: a bigger message could never be delivered.
    max_publish_bytes: int = DEFAULT_MAX_PUBLISH_BYTES
    fanout_hwm_messages: int = 200_000  # per gateway pipe; past it messages drop and are counted
    commands_hwm_messages: int = 200_000
    # ZMQ_MAXMSGSIZE on the commands port: a peer that sends a larger message is disconnected
    # by ZeroMQ before it is buffered (publishes are bounded far below; gateways' resync
    # batches stay under 1 MiB)
    max_message_bytes: int = 16 * 1024 * 1024
    # Presence events: rooms matching these globs (or flagged by a backend) push join/leave
    presence_rooms: tuple[str, ...] = ()
    # Message history for recovery: rooms matching these globs keep their last messages
    history_rooms: tuple[str, ...] = ()
    history_size: int = 100  # messages per room
    history_ttl_s: float = 300.0
    history_room_max_bytes: int = 1024 * 1024  # per room; its oldest messages go first
    history_max_bytes: int = 64 * 1024 * 1024  # all rooms; the least recently written room pays
    history_max_rooms: int = 10_000  # then the least recently written room is forgotten
    presence_interval_s: float = 0.2  # coalescing window of presence events
    # Action workers
    worker_timeout_s: float = 5.0  # silent this long: no longer sent requests
    request_timeout_s: float = 30.0  # then the asker gets 504
    # A primary/backup pair (router/peer.py; docs/protocol.md "Failover"). "single": no peer,
    # serving from start to drain.
    role: str = "single"  # "single", "primary" or "backup"
    peer_bind: str = ""  # ROUTER for the peer to connect to
    peer_connect: str = ""  # the peer's peer_bind
    peer_timeout_s: float = 2.0  # silent this long: a client's vote may fail over
    # CURVE (roomcast/curve.py): both files, or neither (off)
    curve_secret_key: str = ""  # our .key_secret certificate (a pair shares one)
    curve_authorized_keys: str = ""  # directory of the clients' public .key certificates
    # Shutdown
    drain_timeout_s: float = 10.0
