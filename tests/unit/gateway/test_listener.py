"""gateway.listener.connection_caps: --max-connections as the open-files limit allows.

(The Listener itself is a Tornado shell: tests/integration/test_listener.py runs it.)
"""

from __future__ import annotations

import pytest

from gateway.listener import connection_caps


@pytest.mark.parametrize(
    ("max_connections", "open_files", "in_use", "caps"),
    [
        pytest.param(100_000, 1_048_576, 20, (100_000, 100_256), id="flag-below-the-limit"),
        pytest.param(100_000, 20_000, 20, (18_956, 19_212), id="reserve-capped-at-1024"),
        pytest.param(100_000, 256, 14, (178, 194), id="small-limit-reserves-64"),
        pytest.param(3, 20_000, 20, (3, 259), id="a-tiny-flag-wins"),
        pytest.param(100, 64, 60, (1, 17), id="never-below-one"),
    ],
)
def test_caps(max_connections: int, open_files: int, in_use: int, caps: tuple[int, int]) -> None:
    soft, hard = connection_caps(max_connections, open_files, in_use)
    assert (soft, hard) == caps
    assert hard > soft
    if max_connections > 1 and soft > 1:
        assert hard + in_use < open_files  # the hard ceiling never exhausts the descriptors
