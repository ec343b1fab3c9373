"""router.workers: route-aware choice of a worker, busy workers, refs and whose reply counts."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from roomcast.core.routes import MAX_ROUTES, parse_route
from router.workers import Miss, Picked, WorkerPool

CHAT = ("GET /chat/members", "POST /chat/say/:room")
SHOP = ("GET /shop/items", "GET /shop/items/:id")
SHOP_V2 = (*SHOP, "DELETE /shop/items/:id")


def pool(refs: object = None) -> WorkerPool:
    counter = itertools.count(1)
    return WorkerPool(timeout_s=5.0, refs=refs or (lambda: next(counter)))  # type: ignore[arg-type]


def ask(p: WorkerPool, method: str, path: str, now: float = 0.0) -> Picked | Miss:
    return p.forward(b"gw", "g1", 7, now, 30.0, method, path)


def test_each_request_goes_only_to_workers_that_serve_it() -> None:
    p = pool()
    p.add(b"chat", 0.0, CHAT)
    p.add(b"shop1", 0.0, SHOP)
    p.add(b"shop2", 0.0, SHOP_V2)
    seen: Counter[bytes] = Counter()
    for _ in range(10):
        for method, path in (("GET", "/chat/members"), ("GET", "/shop/items/3")):
            got = ask(p, method, path)
            assert isinstance(got, Picked)
            seen[got.worker] += 1
    assert seen == {b"chat": 10, b"shop1": 5, b"shop2": 5}  # round-robin among servers
    deleted = ask(p, "DELETE", "/shop/items/3")
    assert isinstance(deleted, Picked) and deleted.worker == b"shop2"
    assert deleted.route == "DELETE /shop/items/:id"


def test_not_found_unless_some_worker_ever_served_it() -> None:
    p = pool()
    assert ask(p, "GET", "/chat/members") is Miss.NO_WORKER  # no worker at all: 503
    p.add(b"chat", 0.0, CHAT)
    assert ask(p, "GET", "/nope") is Miss.NOT_FOUND
    assert ask(p, "PUT", "/chat/members") is Miss.NOT_FOUND
    p.add(b"shop", 0.0, SHOP)
    p.remove(b"shop")
    assert ask(p, "GET", "/shop/items") is Miss.NO_WORKER  # its worker is gone: 503
    assert isinstance(ask(p, "GET", "/chat/members"), Picked)  # nothing else changes


def test_workers_without_routes_serve_everything() -> None:
    p = pool()
    p.add(b"old", 0.0, None)
    got = ask(p, "GET", "/anything/at/all")
    assert isinstance(got, Picked) and got.route == "*"


def test_too_many_routes_count_as_serving_everything() -> None:
    p = pool()
    p.add(b"w", 0.0, tuple(f"GET /r{i}" for i in range(MAX_ROUTES + 1)))
    assert isinstance(ask(p, "GET", "/elsewhere"), Picked)


def test_unparseable_routes_are_left_out() -> None:
    p = pool()
    p.add(b"w", 0.0, ("nonsense", "GET /ok"))
    assert isinstance(ask(p, "GET", "/ok"), Picked)
    assert ask(p, "GET", "/nonsense") is Miss.NOT_FOUND


def test_busy_workers_are_used_only_when_no_idle_one_serves() -> None:
    p = pool()
    p.add(b"a", 0.0, CHAT, busy=True)
    p.add(b"b", 0.0, CHAT)
    for _ in range(4):
        got = ask(p, "GET", "/chat/members")
        assert isinstance(got, Picked) and got.worker == b"b"
    assert p.busy == 1
    p.add(b"b", 0.0, CHAT, busy=True)  # its next Hello says busy too
    got = ask(p, "GET", "/chat/members")
    assert isinstance(got, Picked)  # still served: the worker answers 503 itself if it must
    p.add(b"a", 0.0, CHAT, busy=False)
    got = ask(p, "GET", "/chat/members")
    assert isinstance(got, Picked) and got.worker == b"a"


def test_a_reply_counts_only_from_the_worker_it_was_sent_to() -> None:
    p = pool()
    p.add(b"w", 0.0, CHAT)
    got = ask(p, "GET", "/chat/members")
    assert isinstance(got, Picked)
    assert p.answer(got.ref, b"intruder") == (None, True)
    assert p.in_flight == 1  # still waiting for the real one
    origin, foreign = p.answer(got.ref, b"w")
    assert origin is not None and origin.ref == 7 and not foreign
    assert p.answer(got.ref, b"w") == (None, False)  # answered once


def test_refs_skip_zero_and_those_in_flight() -> None:
    values = iter([0, 5, 5, 6])
    p = pool(lambda: next(values))
    p.add(b"w", 0.0, CHAT)
    first, second = ask(p, "GET", "/chat/members"), ask(p, "GET", "/chat/members")
    assert isinstance(first, Picked) and isinstance(second, Picked)
    assert (first.ref, second.ref) == (5, 6)


def test_routes_served_and_expiry() -> None:
    p = pool()
    p.add(b"a", 0.0, CHAT)
    p.add(b"b", 0.0, ("GET /chat/members",))
    p.add(b"c", 0.0, None)
    assert p.routes_served() == {"GET /chat/members": 2, "POST /chat/say/:room": 1, "*": 1}
    got = ask(p, "POST", "/chat/say/lobby")
    assert isinstance(got, Picked) and got.worker == b"a"
    assert p.seen(b"b", 4.0) and p.seen(b"c", 4.0) and not p.seen(b"zz", 4.0)
    orphans, late = p.expire(6.0)  # a: silent for 6 s > 5 s
    assert [o.ref for o in orphans] == [7] and late == []
    assert len(p) == 2


@pytest.mark.parametrize(
    ("spec", "method", "path", "params"),
    [
        ("GET /user/:id", "GET", "/user/7", {"id": "7"}),
        ("GET /user/:id", "POST", "/user/7", None),
        ("* /files/*", "PUT", "/files", {}),
        ("* /files/*", "GET", "/files/a/b", {}),
        ("* /files/*", "CONNECT", "/files/a", None),
        ("GET /a/:x/*", "GET", "/a", None),
        ("GET /a/:x/*", "GET", "/a/%20/z", {"x": " "}),
        ("GET /", "GET", "/", {}),
    ],
)
def test_route_patterns(spec: str, method: str, path: str, params: object) -> None:
    route = parse_route(spec)
    assert route.match(method, [s for s in path.split("/") if s]) == params
    assert parse_route(route.spec) == route


@pytest.mark.parametrize("spec", ["", "GET", "GET user", "/user"])
def test_bad_route_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_route(spec)


def test_round_robin_is_per_route_whatever_is_asked_in_between() -> None:
    p = pool()
    p.add(b"v1", 0.0, CHAT)
    p.add(b"v2", 0.0, (*CHAT, "GET /chat/history/:room"))
    members: Counter[bytes] = Counter()
    for _ in range(6):
        got = ask(p, "GET", "/chat/members")
        assert isinstance(got, Picked)
        members[got.worker] += 1
        assert isinstance(ask(p, "POST", "/chat/say/x"), Picked)
        assert isinstance(ask(p, "GET", "/chat/history/x"), Picked)
    assert members == {b"v1": 3, b"v2": 3}
