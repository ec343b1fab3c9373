"""tests/conftest.py: the timeout unit and deadline_poll that every tier relies on."""

from __future__ import annotations

import itertools

import prometheus_client
import pytest

from tests import conftest
from tests.conftest import TIMEOUT_UNIT, deadline_poll


def test_timeout_unit_is_positive() -> None:
    assert TIMEOUT_UNIT > 0
    assert conftest.TIMEOUT_FACTOR * 1.0 == TIMEOUT_UNIT


@pytest.mark.parametrize(
    ("factor", "ci", "expected"),
    [
        (None, None, 1.0),
        ("", None, 1.0),
        (None, "true", 2.0),
        (None, "false", 1.0),
        ("3.5", None, 3.5),
        ("0.5", "true", 0.5),  # an explicit factor wins over CI
    ],
)
def test_timeout_factor_from_env(
    monkeypatch: pytest.MonkeyPatch, factor: str | None, ci: str | None, expected: float
) -> None:
    for name, value in (("ROOMCAST_TEST_TIMEOUT_FACTOR", factor), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert conftest._timeout_factor() == expected


@pytest.mark.parametrize("bad", ["fast", "0", "-1", "nan"])
def test_bad_timeout_factor_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("ROOMCAST_TEST_TIMEOUT_FACTOR", bad)
    with pytest.raises(RuntimeError, match="ROOMCAST_TEST_TIMEOUT_FACTOR"):
        conftest._timeout_factor()


def test_deadline_poll_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert deadline_poll(lambda: next(calls) >= 3 and "done", 5 * TIMEOUT_UNIT, 0.001) == "done"
    assert deadline_poll(lambda: [1], 0) == [1]  # called at least once, even with no time


def test_deadline_poll_fails_with_a_message() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the answer \(last value: 0\)"):
        deadline_poll(lambda: 0, 0.02, 0.005, message="the answer")


def test_deadline_poll_names_the_function_by_default() -> None:
    def never() -> None:
        return None

    with pytest.raises(AssertionError, match="never"):
        deadline_poll(never, 0.0)


def test_fresh_registry_is_empty(fresh_registry: prometheus_client.CollectorRegistry) -> None:
    assert list(fresh_registry.collect()) == []
    assert fresh_registry is not prometheus_client.REGISTRY
