"""roomcast.core.limits: the publish size bound, counted as event + data bytes."""

from __future__ import annotations

import pytest

from roomcast.core.errors import PayloadTooLarge, RoomcastError
from roomcast.core.limits import DEFAULT_MAX_PUBLISH_BYTES, check_publish_size, publish_size


def test_default_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_PUBLISH_BYTES == 1_048_576


@pytest.mark.parametrize(
    ("event", "data", "size"),
    [("message", b"null", 11), ("", b"", 0), ("é", b'"x"', 5), ("e", b"x" * 100, 101)],
)
def test_size_counts_event_utf8_bytes_and_data(event: str, data: bytes, size: int) -> None:
    assert publish_size(event, data) == size


@pytest.mark.parametrize(
    ("event", "data", "limit", "refused"),
    [
        ("m", b"x" * 99, 100, False),  # exactly at the bound
        ("m", b"x" * 100, 100, True),  # one byte over
        ("mm", b"x" * 99, 100, True),  # the event name counts
        ("m", b"x" * 10_000_000, 0, False),  # 0: no bound
    ],
)
def test_check_refuses_only_over_the_bound(
    event: str, data: bytes, limit: int, refused: bool
) -> None:
    if not refused:
        check_publish_size(event, data, limit)
        return
    with pytest.raises(PayloadTooLarge) as info:
        check_publish_size(event, data, limit)
    err = info.value
    assert isinstance(err, RoomcastError) and err.status == 413
    assert (err.size, err.limit) == (publish_size(event, data), limit)
    assert f"{err.size} bytes" in err.message and f"limit of {limit} bytes" in err.message
