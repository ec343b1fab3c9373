"""gateway.policy: who may join/leave and broadcast to which rooms (config + token claims)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy import ANONYMOUS, Identity, RoomPolicy, fnmatch_escape

ADA = Identity(user="ada")
BOB = Identity(user="bob")


def test_identities() -> None:
    assert ANONYMOUS.anonymous
    assert Identity() == ANONYMOUS
    assert ANONYMOUS.join == () and ANONYMOUS.publish == ()
    assert not ADA.anonymous


def test_production_default_denies_everything() -> None:
    policy = RoomPolicy()
    for identity in (ANONYMOUS, ADA, Identity("ada", ("other:*",), ("other:*",))):
        for room in ("chat", "public:x", "user:ada", "*", ""):
            assert not policy.may_join(identity, room)
            assert not policy.may_publish(identity, room)


def test_development_star_allows_everything() -> None:
    policy = RoomPolicy(join=("*",), publish=("*",))
    for identity in (ANONYMOUS, ADA):
        for room in ("chat", "public:x", "user:bob", "sails_model_user_7:user", "a\u00e9b"):
            assert policy.may_join(identity, room)
            assert policy.may_publish(identity, room)


# (config join patterns, room, allowed) for an anonymous connection: plain glob semantics.
GLOBS: list[Any] = [
    (("public:*",), "public:x", True),
    (("public:*",), "public:", True),
    (("public:*",), "public:a:b", True),  # * crosses ':'
    (("public:*",), "public", False),
    (("public:*",), "Public:x", False),  # case-sensitive
    (("public:*",), "xpublic:x", False),  # anchored at the start
    (("public:*",), "private:x", False),
    (("chat",), "chat", True),
    (("chat",), "chat2", False),  # anchored at the end
    (("room-?",), "room-1", True),
    (("room-?",), "room-12", False),
    (("room-[ab]",), "room-a", True),
    (("room-[ab]",), "room-c", False),
    (("room-[!ab]",), "room-c", True),
    (("a:*", "b:*"), "b:1", True),  # any pattern of several
    (("a:*", "b:*"), "c:1", False),
    (("line*",), "line1\nline2", True),  # no newline surprise
    (("*",), "", True),
]


@pytest.mark.parametrize(("patterns", "room", "allowed"), GLOBS)
def test_config_patterns_are_anchored_case_sensitive_globs(
    patterns: tuple[str, ...], room: str, allowed: bool
) -> None:
    join_only = RoomPolicy(join=patterns)
    assert join_only.may_join(ANONYMOUS, room) is allowed
    assert join_only.may_publish(ANONYMOUS, room) is False  # join patterns do not grant publish
    publish_only = RoomPolicy(publish=patterns)
    assert publish_only.may_publish(ANONYMOUS, room) is allowed
    assert publish_only.may_join(ANONYMOUS, room) is False


# (identity, config join patterns, room, allowed) with {user} = the token's subject.
USER_ROOMS: list[Any] = [
    pytest.param(Identity("ada", ("user:{user}",)), (), "user:ada", True, id="own-room"),
    pytest.param(Identity("ada", ("user:{user}",)), (), "user:bob", False, id="not-anothers"),
    pytest.param(Identity("ada", ("user:{user}",)), (), "user:ada2", False, id="anchored"),
    pytest.param(Identity("ada", ("user:{user}",)), (), "user:ad", False, id="whole-id"),
    pytest.param(Identity("ada", ("user:{user}",)), (), "user:*", False, id="star-room-literal"),
    pytest.param(
        Identity("ada", ("user:{user}:*",)), (), "user:ada:inbox", True, id="user-then-glob"
    ),
    pytest.param(Identity("ada", ("dm:{user}:{user}",)), (), "dm:ada:ada", True, id="user-twice"),
    pytest.param(Identity("ada", ("dm:{user}:{user}",)), (), "dm:ada:bob", False, id="twice-both"),
    pytest.param(Identity("ada", ("{user}",)), (), "ada", True, id="bare-user"),
    # the subject is a literal: glob characters in it match only themselves
    pytest.param(Identity("a*", ("user:{user}",)), (), "user:a*", True, id="star-in-sub-literal"),
    pytest.param(Identity("a*", ("user:{user}",)), (), "user:abc", False, id="star-in-sub-no-glob"),
    pytest.param(Identity("?", ("user:{user}",)), (), "user:x", False, id="qmark-in-sub"),
    pytest.param(Identity("?", ("user:{user}",)), (), "user:?", True, id="qmark-in-sub-literal"),
    pytest.param(Identity("[x]", ("user:{user}",)), (), "user:x", False, id="class-in-sub"),
    pytest.param(Identity("[x]", ("user:{user}",)), (), "user:[x]", True, id="class-literal"),
    pytest.param(Identity("a]b[", ("u:{user}",)), (), "u:a]b[", True, id="brackets-literal"),
    pytest.param(Identity("[!a]", ("u:{user}",)), (), "u:[!a]", True, id="negation-literal"),
    pytest.param(Identity("[!a]", ("u:{user}",)), (), "u:b", False, id="negation-no-glob"),
    # {user} in the gateway's own config: every user gets their own room
    pytest.param(ADA, ("user:{user}",), "user:ada", True, id="config-own-room"),
    pytest.param(BOB, ("user:{user}",), "user:ada", False, id="config-not-anothers"),
    pytest.param(ANONYMOUS, ("user:{user}",), "user:", False, id="anonymous-has-no-user-room"),
    pytest.param(ANONYMOUS, ("user:{user}",), "user:{user}", False, id="anonymous-no-literal"),
    pytest.param(ANONYMOUS, ("user:{user}", "public:*"), "public:x", True, id="anon-others-apply"),
    # claims and config add up
    pytest.param(Identity("ada", ("team:*",)), ("public:*",), "public:x", True, id="config-too"),
    pytest.param(Identity("ada", ("team:*",)), ("public:*",), "team:x", True, id="claims-too"),
    pytest.param(Identity("ada", ("team:*",)), ("public:*",), "other:x", False, id="neither"),
]


@pytest.mark.parametrize(("identity", "config", "room", "allowed"), USER_ROOMS)
def test_user_patterns_and_claims(
    identity: Identity, config: tuple[str, ...], room: str, allowed: bool
) -> None:
    policy = RoomPolicy(join=config)
    assert policy.may_join(identity, room) is allowed


def test_claims_grant_join_and_publish_separately() -> None:
    ada = Identity("ada", join=("user:{user}",), publish=("news:{user}",))
    policy = RoomPolicy()
    assert policy.may_join(ada, "user:ada") and not policy.may_publish(ada, "user:ada")
    assert policy.may_publish(ada, "news:ada") and not policy.may_join(ada, "news:ada")
    assert not policy.may_publish(ada, "news:bob")


def test_one_identitys_claims_never_help_another() -> None:
    policy = RoomPolicy(join=("public:*",))
    ada = Identity("ada", join=("team:red",))
    assert policy.may_join(ada, "team:red")
    assert not policy.may_join(BOB, "team:red")
    assert not policy.may_join(ANONYMOUS, "team:red")


DENIED: list[Any] = [
    pytest.param([], False, None, id="no-rooms"),
    pytest.param(["public:a"], False, None, id="one-allowed"),
    pytest.param(["public:a", "user:ada", "public:b"], False, None, id="all-allowed"),
    pytest.param(["private:x"], False, "private:x", id="one-denied"),
    pytest.param(["public:a", "user:bob", "private:x"], False, "user:bob", id="first-denied"),
    pytest.param(["news:ada"], True, None, id="publish-allowed"),
    pytest.param(["news:ada", "public:a"], True, "public:a", id="publish-uses-publish-patterns"),
    pytest.param(["news:ada"], False, "news:ada", id="join-uses-join-patterns"),
]


@pytest.mark.parametrize(("rooms", "publish", "first_denied"), DENIED)
def test_denied_names_the_first_room_refused(
    rooms: list[str], publish: bool, first_denied: str | None
) -> None:
    policy = RoomPolicy(join=("public:*",))
    ada = Identity("ada", join=("user:{user}",), publish=("news:{user}",))
    assert policy.denied(ada, rooms, publish=publish) == first_denied


def test_denied_accepts_any_iterable() -> None:
    policy = RoomPolicy(join=("public:*",))
    assert policy.denied(ANONYMOUS, iter(["public:a", "x"]), publish=False) == "x"
    assert policy.denied(ANONYMOUS, ("public:a",), publish=False) is None


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("ada", "ada"),
        ("a*", "a[*]"),
        ("?", "[?]"),
        ("[x]", "[[]x[]]"),
        ("a-b:c!", "a-b:c!"),
        ("", ""),
    ],
)
def test_fnmatch_escape(text: str, escaped: str) -> None:
    assert fnmatch_escape(text) == escaped
