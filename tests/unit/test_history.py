"""router.history: recovery positions, and memory bounded per room, in total and in rooms."""

from __future__ import annotations

import pytest

from router.history import ENTRY_OVERHEAD_BYTES, History, entry_bytes


def history(**kw: int) -> History:
    return History(patterns=["h:*"], size=100, ttl_s=60.0, epoch="e", **kw)


def offsets(h: History, room: str, since: int = 0) -> list[int]:
    rec = h.since(room, "", since, 0.0) if since == 0 else h.since(room, epoch(h, room), since, 0.0)
    return [o for o, _e, _d in rec.messages]


def epoch(h: History, room: str) -> str:
    return h.since(room, "", 0, 0.0).epoch


def test_entry_cost_counts_event_data_and_overhead() -> None:
    assert entry_bytes("ev", b"1234") == 6 + ENTRY_OVERHEAD_BYTES


def test_rooms_outside_the_patterns_keep_nothing() -> None:
    h = history()
    assert h.append(["other"], "m", b"1", 0.0) == []
    assert h.rooms() == 0 and h.bytes() == 0


def test_room_bytes_evict_the_oldest_messages_first() -> None:
    one = entry_bytes("m", b"x" * 100)
    h = history(room_max_bytes=3 * one)
    for _ in range(5):
        h.append(["h:a"], "m", b"x" * 100, 0.0)
    assert offsets(h, "h:a", since=2) == [3, 4, 5]
    assert h.bytes() == 3 * one
    assert h.take_evictions() == {"room_bytes": 2}
    assert h.take_evictions() == {}  # taken once
    rec = h.since("h:a", epoch(h, "h:a"), 1, 0.0)
    assert not rec.recovered  # message 2 is gone: an honest gap


def test_a_message_larger_than_a_rooms_bound_is_not_kept_and_breaks_recovery() -> None:
    h = history(room_max_bytes=1000)
    h.append(["h:a"], "m", b"small", 0.0)
    [(room, ep, offset)] = h.append(["h:a"], "m", b"x" * 2000, 0.0)
    assert (room, offset) == ("h:a", 2)
    assert h.bytes() == 0
    assert h.take_evictions() == {"too_large": 1, "room_bytes": 1}
    # A client that saw message 1 missed message 2, which nobody can give it.
    assert not h.since("h:a", ep, 1, 0.0).recovered


def test_total_bytes_evict_from_the_least_recently_written_room() -> None:
    one = entry_bytes("m", b"x" * 100)
    h = history(max_bytes=4 * one)
    h.append(["h:old"], "m", b"x" * 100, 0.0)
    h.append(["h:old"], "m", b"x" * 100, 0.0)
    h.append(["h:new"], "m", b"x" * 100, 0.0)
    h.append(["h:old"], "m", b"x" * 100, 0.0)  # h:old is now the most recently written
    h.append(["h:new"], "m", b"x" * 100, 0.0)  # over the total: h:old is now the older
    assert h.bytes() == 4 * one
    assert h.take_evictions() == {"total_bytes": 1}
    assert offsets(h, "h:old", since=1) == [2, 3]  # its oldest went
    assert offsets(h, "h:new", since=0) == [1, 2]


def test_total_bytes_forget_a_room_emptied_by_eviction() -> None:
    one = entry_bytes("m", b"x" * 100)
    h = history(max_bytes=2 * one)
    h.append(["h:a"], "m", b"x" * 100, 0.0)
    h.append(["h:b"], "m", b"x" * 100, 0.0)
    h.append(["h:c"], "m", b"x" * 100, 0.0)
    assert h.rooms() == 2
    assert h.since("h:a", "", 0, 0.0).epoch == ""  # forgotten
    assert h.bytes() == 2 * one


def test_room_count_forgets_the_least_recently_written_room() -> None:
    h = history(max_rooms=2)
    h.append(["h:a"], "m", b"1", 0.0)
    h.append(["h:b"], "m", b"1", 0.0)
    h.append(["h:a"], "m", b"2", 0.0)
    h.append(["h:c"], "m", b"1", 0.0)  # h:b is the least recently written
    assert h.rooms() == 2
    assert h.since("h:b", "", 0, 0.0).epoch == ""
    assert offsets(h, "h:a") == [1, 2]
    assert h.take_evictions() == {"rooms": 1}
    assert h.bytes() == entry_bytes("m", b"1") * 3


def test_ttl_and_size_release_their_bytes_without_counting_evictions() -> None:
    h = History(patterns=["h:*"], size=2, ttl_s=10.0, epoch="e")
    for t in (0.0, 1.0, 2.0):
        h.append(["h:a"], "m", b"1", t)
    assert h.bytes() == 2 * entry_bytes("m", b"1")
    h.sweep(100.0)
    assert h.bytes() == 0 and h.rooms() == 0
    assert h.take_evictions() == {}


@pytest.mark.parametrize("n", [1, 50, 400])
def test_many_large_messages_to_many_rooms_stay_within_the_total(n: int) -> None:
    """The finding: 400 rooms x ~1 MiB grew the router by 400 MB. Now the total holds."""
    h = history(max_bytes=8 * 1024 * 1024)
    data = b"x" * (1024 * 1024 - 200)
    for i in range(n):
        h.append([f"h:{i}"], "m", data, 0.0)
        assert h.bytes() <= 8 * 1024 * 1024
    assert h.rooms() == min(n, 8)
