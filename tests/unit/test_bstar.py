"""router.bstar: the Binary Star state machine, fed events with the time passed in."""

from __future__ import annotations

import ast
import pathlib

import pytest

from router.bstar import BinaryStar, Decision, Event, Role, State, peer_event

TIMEOUT = 2.0
P, B = Role.PRIMARY, Role.BACKUP
PRIMARY, BACKUP, ACTIVE, PASSIVE = State.PRIMARY, State.BACKUP, State.ACTIVE, State.PASSIVE
LEAVING = State.LEAVING
PEER = {s: peer_event(s) for s in State}


def machine(role: Role, state: State | None = None, *, now: float = 0.0) -> BinaryStar:
    fsm = BinaryStar(role, peer_timeout_s=TIMEOUT, now=now)
    if state is not None:
        fsm.state = state
    return fsm


# --- peer events: every (role, state, peer state) combination ---------------------------------

# (our role, our state, the peer's announced state) -> our state after; absent: unchanged.
CHANGES = {
    (P, PRIMARY, BACKUP): ACTIVE,
    (P, PRIMARY, PASSIVE): ACTIVE,
    (P, PRIMARY, ACTIVE): PASSIVE,
    (P, PASSIVE, BACKUP): ACTIVE,
    (P, PASSIVE, PASSIVE): ACTIVE,
    (B, BACKUP, ACTIVE): PASSIVE,
    (B, ACTIVE, ACTIVE): PASSIVE,
    # A peer stopping on purpose: whoever is not serving takes over at once.
    (P, PRIMARY, LEAVING): ACTIVE,
    (P, PASSIVE, LEAVING): ACTIVE,
    (B, BACKUP, LEAVING): ACTIVE,
    (B, PASSIVE, LEAVING): ACTIVE,
}
REACHABLE = {P: (PRIMARY, ACTIVE, PASSIVE), B: (BACKUP, ACTIVE, PASSIVE)}
PEER_CASES = [
    (role, ours, theirs, CHANGES.get((role, ours, theirs), ours))
    for role, states in REACHABLE.items()
    for ours in states
    for theirs in State
]


@pytest.mark.parametrize(
    ("role", "ours", "theirs", "after"),
    PEER_CASES,
    ids=[f"{r.value}-{o.value}-hears-{t.value}" for r, o, t, _ in PEER_CASES],
)
def test_peer_event_table(role: Role, ours: State, theirs: State, after: State) -> None:
    fsm = machine(role, ours)
    decision = fsm.handle(PEER[theirs], 1.0)
    assert (decision.before, decision.after, fsm.state) == (ours, after, after)
    assert decision.accept is False
    assert fsm.peer_state is theirs
    same_role = theirs.value == role.value  # "primary" hears "primary", "backup" hears "backup"
    assert decision.conflict is same_role
    if decision.changed or decision.conflict:
        assert decision.reason


def test_every_peer_event_refreshes_the_peer_expiry() -> None:
    fsm = machine(B, PASSIVE)
    for t in (1.0, 2.5, 4.0):
        fsm.handle(Event.PEER_ACTIVE, t)
        assert fsm.peer_expiry == t + TIMEOUT
        assert fsm.peer_alive(t + TIMEOUT - 0.001) and not fsm.peer_alive(t + TIMEOUT)


# --- client requests (votes) ------------------------------------------------------------------

# (role, state, peer alive?) -> (accept, state after)
VOTES = [
    (P, ACTIVE, True, True, ACTIVE),
    (P, ACTIVE, False, True, ACTIVE),
    (B, ACTIVE, True, True, ACTIVE),
    (P, PRIMARY, True, False, PRIMARY),  # not before it heard the backup...
    (P, PRIMARY, False, True, ACTIVE),  # ...or the backup stayed silent for the whole timeout
    (P, PASSIVE, True, False, PASSIVE),
    (P, PASSIVE, False, True, ACTIVE),
    (B, PASSIVE, True, False, PASSIVE),
    (B, PASSIVE, False, True, ACTIVE),  # failover: silent peer + a client's vote
    (B, BACKUP, True, False, BACKUP),
    (B, BACKUP, False, False, BACKUP),  # never heard its primary: never serves
    (P, LEAVING, True, False, LEAVING),  # stopping: serves no one, whoever asks
    (P, LEAVING, False, False, LEAVING),
    (B, LEAVING, False, False, LEAVING),
]


@pytest.mark.parametrize(
    ("role", "state", "alive", "accept", "after"),
    VOTES,
    ids=[f"{r.value}-{s.value}-{'alive' if a else 'silent'}" for r, s, a, _, _ in VOTES],
)
def test_client_request_table(
    role: Role, state: State, alive: bool, accept: bool, after: State
) -> None:
    fsm = machine(role, state, now=0.0)
    now = 1.0 if alive else TIMEOUT
    decision = fsm.handle(Event.CLIENT_REQUEST, now)
    assert (decision.accept, decision.after, fsm.state) == (accept, after, after)
    assert fsm.serving is (after is ACTIVE)
    if decision.changed or not decision.accept:
        assert decision.reason


def test_a_vote_names_how_long_the_peer_was_silent() -> None:
    fsm = machine(B)
    fsm.handle(Event.PEER_ACTIVE, 10.0)
    assert fsm.handle(Event.CLIENT_REQUEST, 11.0).accept is False
    decision = fsm.handle(Event.CLIENT_REQUEST, 12.5)
    assert decision.accept and "2.5s" in decision.reason


# --- scenarios --------------------------------------------------------------------------------


def run(fsm: BinaryStar, steps: list[tuple[float, Event]]) -> list[Decision]:
    return [fsm.handle(event, now) for now, event in steps]


def test_normal_start_primary_active_backup_passive() -> None:
    p, b = machine(P), machine(B)
    assert not p.serving and not b.serving
    run(b, [(0.1, PEER[p.state])])  # backup hears PRIMARY: waits
    assert b.state is BACKUP
    run(p, [(0.1, PEER[b.state])])  # primary hears BACKUP: active
    assert p.state is ACTIVE
    run(b, [(0.2, PEER[p.state])])
    assert b.state is PASSIVE
    assert run(p, [(0.3, Event.CLIENT_REQUEST)])[0].accept
    assert not run(b, [(0.3, Event.CLIENT_REQUEST)])[0].accept


def test_failover_then_restarted_primary_comes_back_passive() -> None:
    p, b = machine(P, ACTIVE), machine(B, PASSIVE)
    b.handle(Event.PEER_ACTIVE, 5.0)  # last word from the primary; then it dies
    assert not b.handle(Event.CLIENT_REQUEST, 6.0).accept  # within the timeout: refused
    assert b.handle(Event.CLIENT_REQUEST, 7.0).accept  # silent past it: the vote wins
    assert b.state is ACTIVE
    p = machine(P, now=20.0)  # restarted: hears the active backup before serving anyone
    assert not p.handle(Event.CLIENT_REQUEST, 20.1).accept
    p.handle(PEER[b.state], 20.2)
    assert p.state is PASSIVE
    b.handle(PEER[p.state], 20.3)
    assert b.state is ACTIVE  # nothing splits
    p.handle(PEER[b.state], 29.0)
    assert not p.handle(Event.CLIENT_REQUEST, 30.0).accept  # the backup is heard: no vote


def test_broken_link_alone_makes_no_second_active() -> None:
    p, b = machine(P, ACTIVE), machine(B, PASSIVE)
    b.handle(Event.PEER_ACTIVE, 1.0)
    # The link breaks at t=1: both go on without hearing each other, no client asks the backup.
    assert p.handle(Event.CLIENT_REQUEST, 10.0).accept
    assert b.state is PASSIVE and not b.serving


def test_split_brain_is_fenced_when_the_link_heals() -> None:
    p, b = machine(P, ACTIVE), machine(B, PASSIVE)
    b.handle(Event.PEER_ACTIVE, 1.0)
    assert b.handle(Event.CLIENT_REQUEST, 5.0).accept  # a client voted during the break
    assert p.serving and b.serving
    decision = p.handle(PEER[b.state], 6.0)  # healed: the primary stays...
    assert not decision.changed and "fencing" in decision.reason
    decision = b.handle(PEER[p.state], 6.0)  # ...the backup steps down
    assert decision.after is PASSIVE and "fencing" in decision.reason
    assert p.serving and not b.serving


def test_quick_primary_restart_keeps_the_primary() -> None:
    b = machine(B, PASSIVE)
    b.handle(Event.PEER_ACTIVE, 1.0)
    p = machine(P, now=1.5)  # restarted within the peer timeout
    b.handle(PEER[p.state], 1.6)
    assert b.state is PASSIVE
    p.handle(PEER[b.state], 1.6)
    assert p.state is ACTIVE


def test_backup_restart_hands_back_to_the_passive_primary() -> None:
    p = machine(P, PASSIVE)
    p.handle(Event.PEER_ACTIVE, 1.0)
    b = machine(B, now=2.0)
    p.handle(PEER[b.state], 2.1)
    assert p.state is ACTIVE
    b.handle(PEER[p.state], 2.2)
    assert b.state is PASSIVE


def test_same_roles_never_serve_while_they_hear_each_other() -> None:
    one, two = machine(P), machine(P)
    for t in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        assert one.handle(PEER[two.state], t).conflict
        assert two.handle(PEER[one.state], t).conflict
        assert not one.handle(Event.CLIENT_REQUEST, t).accept
    assert one.state is PRIMARY and two.state is PRIMARY


@pytest.mark.parametrize("state", [PRIMARY, ACTIVE, PASSIVE])
def test_a_leaving_router_serves_no_more_and_hears_nothing(state: State) -> None:
    fsm = machine(P, state)
    decision = fsm.leave()
    assert (decision.before, decision.after) == (state, LEAVING) and decision.reason
    assert not fsm.serving
    for event in Event:  # not even a vote or a restarted peer brings it back
        assert fsm.handle(event, TIMEOUT * 10).after is LEAVING
    assert fsm.state is LEAVING


def test_rolling_restart_of_a_pair_hands_over_without_waiting() -> None:
    """SIGTERM to the active primary: the backup serves at once (no peer timeout, no vote);
    the restarted primary comes back passive; SIGTERM to the backup hands back at once."""
    p, b = machine(P, ACTIVE), machine(B, PASSIVE)
    p.leave()
    assert b.handle(PEER[p.state], 0.1).after is ACTIVE
    p = machine(P, now=1.0)
    p.handle(PEER[b.state], 1.1)
    assert p.state is PASSIVE
    b.leave()
    assert p.handle(PEER[b.state], 1.2).after is ACTIVE and p.serving
    b = machine(B, now=2.0)
    b.handle(PEER[p.state], 2.1)
    assert b.state is PASSIVE


def test_bad_timeout() -> None:
    with pytest.raises(ValueError):
        BinaryStar(P, peer_timeout_s=0, now=0.0)


def test_is_pure() -> None:
    """No clock, no I/O: the module imports only dataclasses and enum."""
    source = pathlib.Path(__file__).resolve().parents[2] / "router" / "bstar.py"
    tree = ast.parse(source.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "dataclasses", "enum"}
