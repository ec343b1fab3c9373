"""roomcast.core.closecodes: the contract close codes and what a client should do on each."""

from __future__ import annotations

import pytest

from roomcast.core.closecodes import CloseCode, reconnect_policy

# architecture §4, the contract.
CONTRACT = [
    (CloseCode.GOING_AWAY, 1001, "now"),
    (CloseCode.POLICY_VIOLATION, 1008, "never"),
    (CloseCode.MESSAGE_TOO_BIG, 1009, "never"),
    (CloseCode.INTERNAL_ERROR, 1011, "backoff"),
    (CloseCode.SLOW_CONSUMER, 4001, "now"),
    (CloseCode.ROUTER_UNAVAILABLE, 4002, "now"),
    (CloseCode.ABUSE, 4003, "backoff"),
]


def test_contract_is_complete() -> None:
    assert {code for code, _, _ in CONTRACT} == set(CloseCode)


@pytest.mark.parametrize(("code", "value", "policy"), CONTRACT, ids=lambda x: str(x))
def test_code_value_and_policy(code: CloseCode, value: int, policy: str) -> None:
    assert code == value
    assert CloseCode(value) is code
    assert reconnect_policy(code) == policy
    assert reconnect_policy(value) == policy  # plain ints from the wire work too


@pytest.mark.parametrize("value", [1000, 1002, 1006, 1010, 4000, 4004, 4999, 0, -1])
def test_unknown_codes_do_not_reconnect(value: int) -> None:
    assert reconnect_policy(value) == "never"


def test_application_codes_are_in_the_private_range() -> None:
    for code in CloseCode:
        assert 1000 <= code < 1016 or 4000 <= code < 5000, code
