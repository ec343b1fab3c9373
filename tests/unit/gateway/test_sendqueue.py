"""gateway.sendqueue: a bounded send queue, coalesced into one write, one write in flight."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sendqueue import SendQueue


def state(q: SendQueue) -> dict[str, Any]:
    return {
        "pending": q.pending,
        "inflight": q.inflight,
        "queued_frames": q.queued_frames,
        "idle": q.idle,
    }


EMPTY = {"pending": 0, "inflight": 0, "queued_frames": 0, "idle": True}


def test_new_queue_is_idle() -> None:
    q = SendQueue(100)
    assert q.limit == 100
    assert state(q) == EMPTY
    assert q.take() is None
    assert q.discard() == 0


# A script of calls on SendQueue(10) and what each returns, then the state at the end.
# ("push", frame) -> bool; ("take",) -> bytes | None; ("written",) -> None; ("discard",) -> int
SCRIPTS: list[Any] = [
    pytest.param(
        [("push", b"abc", True)],
        {"pending": 3, "inflight": 0, "queued_frames": 0, "idle": False},
        id="push-pending",
    ),
    pytest.param(
        [("push", b"x" * 10, True)],
        {"pending": 10, "inflight": 0, "queued_frames": 0, "idle": False},
        id="push-exactly-the-limit",
    ),
    pytest.param(
        [("push", b"x" * 11, False)],
        EMPTY,
        id="frame-over-the-limit-never-fits",
    ),
    pytest.param(
        [("push", b"x" * 6, True), ("push", b"y" * 5, False), ("push", b"z" * 4, True)],
        {"pending": 10, "inflight": 0, "queued_frames": 0, "idle": False},
        id="refused-frame-is-not-queued",
    ),
    pytest.param(
        [("push", b"a", True), ("push", b"bc", True), ("push", b"def", True),
         ("take", b"abcdef")],
        {"pending": 0, "inflight": 6, "queued_frames": 3, "idle": False},
        id="coalesced-into-one-write",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("push", b"d", True), ("take", None)],
        {"pending": 1, "inflight": 3, "queued_frames": 1, "idle": False},
        id="one-write-in-flight",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("push", b"d", True), ("push", b"e", True),
         ("written", None), ("take", b"de")],
        {"pending": 0, "inflight": 2, "queued_frames": 2, "idle": False},
        id="next-write-after-written",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("written", None)],
        EMPTY,
        id="written-drains",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("written", None), ("take", None)],
        EMPTY,
        id="nothing-to-take-after-written",
    ),
    pytest.param(
        [("push", b"x" * 6, True), ("take", b"x" * 6), ("push", b"y" * 5, False),
         ("push", b"z" * 4, True)],
        {"pending": 4, "inflight": 6, "queued_frames": 1, "idle": False},
        id="bound-counts-in-flight-bytes",
    ),
    pytest.param(
        [("push", b"x" * 6, True), ("take", b"x" * 6), ("written", None),
         ("push", b"y" * 10, True)],
        {"pending": 10, "inflight": 0, "queued_frames": 0, "idle": False},
        id="written-frees-the-bound",
    ),
    pytest.param(
        [("push", b"a", True), ("push", b"b", True), ("discard", 2)],
        EMPTY,
        id="discard-pending",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("push", b"d", True), ("discard", 1)],
        {"pending": 0, "inflight": 3, "queued_frames": 1, "idle": False},
        id="discard-keeps-in-flight",
    ),
    pytest.param(
        [("push", b"abc", True), ("take", b"abc"), ("discard", 0), ("written", None)],
        EMPTY,
        id="idle-once-in-flight-write-completes",
    ),
    pytest.param(
        [("push", b"x" * 10, True), ("discard", 1), ("push", b"y" * 10, True)],
        {"pending": 10, "inflight": 0, "queued_frames": 0, "idle": False},
        id="discard-frees-the-bound",
    ),
    pytest.param(
        [("push", b"a", True), ("discard", 1), ("take", None)],
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
        elif op == "written":
            q.written()
            result = None
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
        assert q.push(b"%d;" % i)
        if i % 3 == 0:
            data = q.take()
            if data is not None:
                out.append(data)
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
    assert q.push(b"x") is False
    assert q.idle
