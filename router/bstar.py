"""Binary Star: which router of a primary/backup pair serves (pure; time is passed in).

zguide's Binary Star finite-state machine, adapted (docs/protocol.md, "Failover"). Each router
of the pair starts in the state named after its role (``PRIMARY`` or ``BACKUP``), tells its peer
its state every peer interval, and feeds this machine two kinds of events: the peer's state
(``PEER_PRIMARY`` .. ``PEER_PASSIVE``) and ``CLIENT_REQUEST`` (a gateway's Hello or an SDK
client's command). Only an ``ACTIVE`` router serves; the others answer ``router_passive``.

The rules, and where they differ from zguide's:

* A primary becomes ACTIVE when it hears the backup standing by (``BACKUP`` or ``PASSIVE``) and
  PASSIVE when it hears the backup ``ACTIVE`` (the backup took over while the primary was away:
  a restarted primary comes back passive). zguide's primary serves from its first moment;
  ours serves only once it heard its peer, or once the peer stayed silent for the whole peer
  timeout (then on a client's vote), so a restarted primary never serves a client while the
  backup is still active.
* A backup becomes PASSIVE when it hears the primary ``ACTIVE``. A backup that has not heard
  its primary since it started never serves (zguide's rule: at start it cannot tell a dead
  primary from a broken link).
* Failover: a PASSIVE router (or a PRIMARY that never heard its peer) becomes ACTIVE only when
  the peer has been silent past the peer timeout **and** a client request arrives -- the
  client's vote. A broken router-router link alone does not make a second active router while
  the clients still reach the first.
* Fencing: two ACTIVE routers (possible only if the link broke and a client voted for the
  backup) are resolved as soon as they hear each other: the primary wins; the backup steps down
  to PASSIVE (its shell resets its gateways, which move back). zguide aborts instead.
* Restarts: a PASSIVE primary that hears ``PEER_BACKUP`` (the backup restarted and lost its
  state) becomes ACTIVE; a PASSIVE backup that hears ``PEER_PRIMARY`` stays passive (the
  restarted primary hears it passive and becomes ACTIVE itself -- zguide hands over to the
  backup here; ours keeps the primary, which is the one gateways already know). Two PASSIVE
  routers: the primary becomes ACTIVE.
* Leaving: a router stopped on purpose (SIGTERM) says ``LEAVING`` and serves no more; a peer
  standing by (or not yet paired) that hears it becomes ACTIVE at once, with no vote needed: no
  second active router can arise, since the leaving one already stopped serving.
* Two routers with the same role never serve while they hear each other: every decision then
  carries ``conflict`` so the shell logs the misconfiguration.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["BinaryStar", "Decision", "Event", "Role", "State", "peer_event"]


class Role(enum.Enum):
    PRIMARY = "primary"
    BACKUP = "backup"


class State(enum.Enum):
    PRIMARY = "primary"  # primary, waiting to hear its peer
    BACKUP = "backup"  # backup, waiting to hear its peer
    ACTIVE = "active"  # serving
    PASSIVE = "passive"  # standing by
    LEAVING = "leaving"  # stopping on purpose: serves no more, whatever it hears


class Event(enum.Enum):
    PEER_PRIMARY = "peer_primary"
    PEER_BACKUP = "peer_backup"
    PEER_ACTIVE = "peer_active"
    PEER_PASSIVE = "peer_passive"
    PEER_LEAVING = "peer_leaving"
    CLIENT_REQUEST = "client_request"


_PEER_EVENTS = {
    State.PRIMARY: Event.PEER_PRIMARY,
    State.BACKUP: Event.PEER_BACKUP,
    State.ACTIVE: Event.PEER_ACTIVE,
    State.PASSIVE: Event.PEER_PASSIVE,
    State.LEAVING: Event.PEER_LEAVING,
}


def peer_event(peer_state: State) -> Event:
    """The event a peer's announced state is."""
    return _PEER_EVENTS[peer_state]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What one event did: the state after it, whether a client request is served, and why."""

    before: State
    after: State
    accept: bool = False  # CLIENT_REQUEST only: serve it (else answer router_passive)
    reason: str = ""  # for the log, when the state changed or a vote was refused
    conflict: bool = False  # the peer has our role: a misconfigured pair

    @property
    def changed(self) -> bool:
        return self.before is not self.after


# (our role, our state, peer event) -> (new state, reason). Absent: no change.
_PEER_RULES: dict[tuple[Role, State, Event], tuple[State, str]] = {
    (Role.PRIMARY, State.PRIMARY, Event.PEER_BACKUP): (State.ACTIVE, "backup standing by"),
    (Role.PRIMARY, State.PRIMARY, Event.PEER_PASSIVE): (State.ACTIVE, "backup standing by"),
    (Role.PRIMARY, State.PRIMARY, Event.PEER_ACTIVE): (State.PASSIVE, "backup is active"),
    (Role.PRIMARY, State.ACTIVE, Event.PEER_ACTIVE): (
        State.ACTIVE,
        "backup is active too: it steps down (fencing: the primary wins)",
    ),
    (Role.PRIMARY, State.PASSIVE, Event.PEER_BACKUP): (State.ACTIVE, "backup restarted"),
    (Role.PRIMARY, State.PASSIVE, Event.PEER_PASSIVE): (State.ACTIVE, "both routers passive"),
    (Role.BACKUP, State.BACKUP, Event.PEER_ACTIVE): (State.PASSIVE, "primary is active"),
    # A peer that stops on purpose serves no more from the moment it says so: take over at
    # once, without waiting out the peer timeout and a client's vote.
    (Role.PRIMARY, State.PRIMARY, Event.PEER_LEAVING): (State.ACTIVE, "backup is leaving"),
    (Role.PRIMARY, State.PASSIVE, Event.PEER_LEAVING): (State.ACTIVE, "backup is leaving"),
    (Role.BACKUP, State.BACKUP, Event.PEER_LEAVING): (State.ACTIVE, "primary is leaving"),
    (Role.BACKUP, State.PASSIVE, Event.PEER_LEAVING): (State.ACTIVE, "primary is leaving"),
    (Role.BACKUP, State.ACTIVE, Event.PEER_ACTIVE): (
        State.PASSIVE,
        "primary is active too: stepping down (fencing: the primary wins)",
    ),
}

_SAME_ROLE = {Role.PRIMARY: Event.PEER_PRIMARY, Role.BACKUP: Event.PEER_BACKUP}


class BinaryStar:
    """The state of one router of a pair. Feed it events with :meth:`handle`."""

    def __init__(self, role: Role, *, peer_timeout_s: float, now: float) -> None:
        if peer_timeout_s <= 0:
            raise ValueError("peer_timeout_s must be positive")
        self.role = role
        self.peer_timeout_s = peer_timeout_s
        self.state = State.PRIMARY if role is Role.PRIMARY else State.BACKUP
        # Until the peer is first heard, the start counts as its last sign of life.
        self.peer_expiry = now + peer_timeout_s
        self.peer_state: State | None = None  # last announced, None before the first

    @property
    def serving(self) -> bool:
        return self.state is State.ACTIVE

    def peer_alive(self, now: float) -> bool:
        """Whether the peer was heard within the peer timeout (or we started that recently)."""
        return now < self.peer_expiry

    def leave(self) -> Decision:
        """We stop on purpose (SIGTERM): serve no more, from now on."""
        before, self.state = self.state, State.LEAVING
        return Decision(before, State.LEAVING, reason="stopping: the peer takes over")

    def handle(self, event: Event, now: float) -> Decision:
        if self.state is State.LEAVING:
            return Decision(self.state, self.state, reason="this router is stopping")
        if event is Event.CLIENT_REQUEST:
            return self._client(now)
        return self._peer(event, now)

    def _peer(self, event: Event, now: float) -> Decision:
        before = self.state
        self.peer_expiry = now + self.peer_timeout_s
        self.peer_state = next(s for s, e in _PEER_EVENTS.items() if e is event)
        if event is _SAME_ROLE[self.role]:
            return Decision(before, before, reason=f"peer is {self.role.value} too", conflict=True)
        rule = _PEER_RULES.get((self.role, before, event))
        if rule is None:
            return Decision(before, before)
        self.state, reason = rule
        return Decision(before, self.state, reason=reason)

    def _client(self, now: float) -> Decision:
        before = self.state
        if before is State.ACTIVE:
            return Decision(before, before, accept=True)
        if before is State.BACKUP:
            return Decision(before, before, reason="backup has not heard its primary yet")
        if self.peer_alive(now):
            return Decision(before, before, reason="peer is alive")
        self.state = State.ACTIVE
        silent = now - (self.peer_expiry - self.peer_timeout_s)
        return Decision(
            before,
            State.ACTIVE,
            accept=True,
            reason=f"peer silent for {silent:.1f}s and a client asked (its vote)",
        )
