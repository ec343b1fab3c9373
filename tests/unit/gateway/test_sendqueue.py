"""gateway.sendqueue: a bounded send queue, coalesced into one write, one write in flight."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sendqueue import FIRST, QUEUED, REFUSED, SendQueue


def state(q: SendQueue) -> dict[str, Any]:
    return {"pending": q.pending, "inflight": q.inflight, "idle": q.idle}


EMPTY = {"pending": 0, "inflight": 0, "idle": True}


def test_new_queue_is_idle() -> None:
    q = SendQueue(100)
    assert q.limit == 100
    assert state(q) == EMPTY
    assert q.take() is None
    assert q.discard() == 0


# A script of calls on SendQueue(10) and what each returns, then the state at the end.
# ("push", frame) -> FIRST | QUEUED | REFUSED; ("take",) -> bytes | None;
# ("sending", n) -> None; ("written",) -> bool; ("discard",) -> int
SCRIPTS: list[Any] = [
    pytest.param(
        [("push", b"abc", FIRST)],
        {"pending": 3, "inflight": 0, "idle": False},
        id="first-frame-asks-for-a-write",
    ),
    pytest.param(
        [("push", b"a", FIRST), ("push", b"b", QUEUED)],
        {"pending": 2, "inflight": 0, "idle": False},
        id="second-frame-joins-the-scheduled-write",
    ),
    pytest.param(
        [("push", b"x" * 10, FIRST)],
        {"pending": 10, "inflight": 0, "idle": False},
        id="push-exactly-the-limit",
    ),
    pytest.param(
        [("push", b"x" * 11, REFUSED)],
        EMPTY,
        id="frame-over-the-limit-never-fits",
    ),
    pytest.param(
        [("push", b"x" * 6, FIRST), ("push", b"y" * 5, REFUSED), ("push", b"z" * 4, QUEUED)],
        {"pending": 10, "inflight": 0, "idle": False},
        id="refused-frame-is-not-queued",
    ),
    pytest.param(
        [("push", b"a", FIRST), ("push", b"bc", QUEUED), ("push", b"def", QUEUED),
         ("take", b"abcdef")],
        EMPTY,
        id="coalesced-into-one-write-that-the-kernel-took",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("push", b"d", FIRST)],
        {"pending": 1, "inflight": 0, "idle": False},
        id="after-a-direct-write-the-next-frame-asks-again",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 2, None), ("push", b"d", QUEUED),
         ("take", None)],
        {"pending": 1, "inflight": 2, "idle": False},
        id="one-write-in-flight",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 3, None), ("push", b"d", QUEUED),
         ("push", b"e", QUEUED), ("written", True), ("take", b"de")],
        EMPTY,
        id="written-says-more-waits",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 3, None), ("written", False)],
        EMPTY,
        id="written-drains",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 1, None), ("written", False),
         ("take", None)],
        EMPTY,
        id="nothing-to-take-after-written",
    ),
    pytest.param(
        [("push", b"x" * 6, FIRST), ("take", b"x" * 6), ("sending", 6, None),
         ("push", b"y" * 5, REFUSED), ("push", b"z" * 4, QUEUED)],
        {"pending": 4, "inflight": 6, "idle": False},
        id="bound-counts-in-flight-bytes",
    ),
    pytest.param(
        [("push", b"x" * 6, FIRST), ("take", b"x" * 6), ("sending", 6, None),
         ("written", False), ("push", b"y" * 10, FIRST)],
        {"pending": 10, "inflight": 0, "idle": False},
        id="written-frees-the-bound",
    ),
    pytest.param(
        [("sending", 3, None), ("sending", 2, None), ("push", b"abcde", QUEUED),
         ("push", b"f", REFUSED), ("take", None), ("written", True), ("take", b"abcde")],
        EMPTY,
        id="held-bytes-add-up-until-all-are-written",
    ),
    pytest.param(
        [("push", b"a", FIRST), ("push", b"b", QUEUED), ("discard", 2)],
        EMPTY,
        id="discard-pending",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 3, None), ("push", b"d", QUEUED),
         ("discard", 1)],
        {"pending": 0, "inflight": 3, "idle": False},
        id="discard-keeps-in-flight",
    ),
    pytest.param(
        [("push", b"abc", FIRST), ("take", b"abc"), ("sending", 3, None), ("discard", 0),
         ("written", False)],
        EMPTY,
        id="idle-once-in-flight-write-completes",
    ),
    pytest.param(
        [("push", b"x" * 10, FIRST), ("discard", 1), ("push", b"y" * 10, FIRST)],
        {"pending": 10, "inflight": 0, "idle": False},
        id="discard-frees-the-bound",
    ),
    pytest.param(
        [("push", b"a", FIRST), ("discard", 1), ("take", None)],
        EMPTY,
        id="discarded-frames-are-not-written",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("script", "final"), SCRIPTS)
def test_scripts(script: list[tuple[Any, ...]], final: dict[str, Any]) -> None:
    q = SendQueue(10)
    for step, (op, *args) in enumerate(script):
        expected = args[-1]
        if op == "push":
            result: Any = q.push(args[0])
        elif op == "take":
            result = q.take()
        elif op == "sending":
            q.sending(args[0])
            result = None
        elif op == "written":
            result = q.written()
        else:
            result = q.discard()
        assert result == expected, (step, op)
    assert state(q) == final


def test_single_frame_is_written_without_copying() -> None:
    q = SendQueue(100)
    frame = b"\x81\x02hi"
    q.push(frame)
    assert q.take() is frame


def test_frames_keep_their_order_across_writes() -> None:
    q = SendQueue(1000)
    out: list[bytes] = []
    for i in range(20):
        assert q.push(b"%d;" % i) != REFUSED
        if i % 3 == 0:
            data = q.take()
            if data is not None:
                out.append(data)
                if i % 2:
                    q.sending(len(data))  # the kernel was full: Tornado holds it
        if i % 5 == 0:
            q.written()
    while not q.idle:
        q.written()
        data = q.take()
        if data is not None:
            out.append(data)
    assert b"".join(out) == b"".join(b"%d;" % i for i in range(20))


def test_zero_limit_refuses_every_frame() -> None:
    q = SendQueue(0)
    assert q.push(b"x") == REFUSED
    assert q.idle
