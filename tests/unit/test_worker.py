"""``roomcast.worker``'s pure parts: how a handler's return value becomes (status, body, headers),
and how ``MODULE:APP`` is loaded. The worker's I/O is covered by tests/integration/test_actions.py.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from roomcast.app import App
from roomcast.requests import Response
from roomcast.worker import load_app, normalize_result

NORMALIZE_CASES: list[tuple[str, Any, tuple[int, Any, dict[str, Any]]]] = [
    ("dict body", {"a": 1}, (200, {"a": 1}, {})),
    ("None body", None, (200, None, {})),
    ("string body", "ok", (200, "ok", {})),
    ("list body", [1, 2], (200, [1, 2], {})),
    ("false body", False, (200, False, {})),
    ("status, body", (201, {"id": 1}), (201, {"id": 1}, {})),
    ("status, None", (204, None), (204, None, {})),
    ("status, body, headers", (302, None, {"location": "/x"}), (302, None, {"location": "/x"})),
    ("headers as pairs", (200, "b", [("x-a", "1")]), (200, "b", {"x-a": "1"})),
    ("lowest status", (100, "c"), (100, "c", {})),
    ("highest status", (599, "c"), (599, "c", {})),
    ("Response", Response(418, {"t": 1}, {"x": "y"}), (418, {"t": 1}, {"x": "y"})),
    ("Response defaults", Response(200), (200, None, {})),
    # Not (status, body[, headers]): the tuple is the body (a JSON array).
    ("1-tuple", (200,), (200, (200,), {})),
    ("4-tuple", (200, 1, {}, 4), (200, (200, 1, {}, 4), {})),
    ("str first", ("a", "b"), (200, ("a", "b"), {})),
    ("float first", (200.0, "b"), (200, (200.0, "b"), {})),
    ("bool first", (True, "yes"), (200, (True, "yes"), {})),
]


@pytest.mark.parametrize(
    ("result", "expected"),
    [(r, e) for _, r, e in NORMALIZE_CASES],
    ids=[name for name, _, _ in NORMALIZE_CASES],
)
def test_normalize_result(result: Any, expected: tuple[int, Any, dict[str, Any]]) -> None:
    assert normalize_result(result) == expected


def test_normalize_result_copies_headers() -> None:
    headers = {"x": "1"}
    for result in ((200, None, headers), Response(200, None, headers)):
        _, _, got = normalize_result(result)
        assert got == headers and got is not headers


@pytest.mark.parametrize(
    "result",
    [(99, "b"), (600, "b"), (0, "b"), (-1, "b"), (2**32, "b"), Response(700), Response(-200)],
    ids=["99", "600", "0", "-1", "2**32", "Response(700)", "Response(-200)"],
)
def test_status_outside_100_599_is_refused(result: Any) -> None:
    """The wire carries a uint32 and clients expect HTTP statuses: the worker answers 500."""
    with pytest.raises(ValueError, match="100-599"):
        normalize_result(result)


def test_response_with_a_non_int_status_is_refused() -> None:
    with pytest.raises(ValueError, match="100-599"):
        normalize_result(Response("200"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="100-599"):
        normalize_result(Response(True))


# ------------------------------------------------------------------------------ load_app


@pytest.fixture
def fake_module() -> Iterator[types.ModuleType]:
    name = "roomcast_test_fake_app_module"
    module = types.ModuleType(name)
    module.app = App()  # type: ignore[attr-defined]
    module.not_an_app = object()  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        yield module
    finally:
        del sys.modules[name]


def test_load_app_returns_the_app(fake_module: types.ModuleType) -> None:
    assert load_app(f"{fake_module.__name__}:app") is fake_module.app  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{mod}", "is not MODULE:APP"),
        ("{mod}:", "is not MODULE:APP"),
        (":app", "is not MODULE:APP"),
        ("{mod}:not_an_app", "is not a roomcast.App"),
        ("{mod}:missing", "is not a roomcast.App"),
        ("roomcast_no_such_module_xyz:app", "cannot import"),
    ],
)
def test_load_app_errors_exit_with_a_message(
    fake_module: types.ModuleType, spec: str, message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        load_app(spec.format(mod=fake_module.__name__))
    assert message in str(info.value.code)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give one of MODULE:APP"),
        (["m:app", "--asgi", "m:api"], "give one of MODULE:APP"),
        (["--asgi", "m:api", "--wsgi", "m:web"], "give one of MODULE:APP"),
        (["m:app", "--sync-threads", "0"], "--sync-threads must be at least 1"),
    ],
)
def test_worker_flags_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from roomcast.worker import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_web_app_that_is_not_callable_is_refused(fake_module: types.ModuleType) -> None:
    from roomcast.worker import load_web_app

    with pytest.raises(SystemExit) as info:
        load_web_app(f"{fake_module.__name__}:not_an_app", wsgi=False, routes=())
    assert "not an ASGI/WSGI app" in str(info.value.code)
