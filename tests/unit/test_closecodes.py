"""roomcast.core.closecodes: the contract close codes and what a client should do on each."""

from __future__ import annotations

import pytest

from roomcast.core.closecodes import CloseCode, is_final, reconnect_policy

# The contract (docs/protocol.md, close codes).
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


# Which closes stop a Socket.IO client's own reconnection (it gets the "41" packet first).
FINAL = {
    CloseCode.GOING_AWAY: False,  # drain: reconnect to another gateway
    CloseCode.POLICY_VIOLATION: True,
    CloseCode.MESSAGE_TOO_BIG: True,
    CloseCode.INTERNAL_ERROR: False,  # retry later, with the client's backoff
    CloseCode.SLOW_CONSUMER: False,
    CloseCode.ROUTER_UNAVAILABLE: False,
    CloseCode.ABUSE: True,
}


def test_final_closes_are_policy_size_and_abuse() -> None:
    assert set(FINAL) == set(CloseCode)
    for code, final in FINAL.items():
        assert is_final(code) is final, code
        assert is_final(int(code)) is final, code
