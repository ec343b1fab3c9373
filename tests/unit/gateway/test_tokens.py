"""gateway.tokens: real PyJWT tokens (HS256, RS256, ES256) made here, accepted or refused.

Keys are generated with ``cryptography`` once per module. Times are relative to the wall clock
because PyJWT reads it (``tokens.py`` itself never does); every margin is at least 10 s either side
of a boundary, so a slow machine cannot flip a case. Refusals are checked by their exact
client-facing reason, and the reason never carries the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.policy import Identity
from gateway.tokens import TokenError, TokenVerifier

SECRET = b"s3cret-for-the-unit-tests-0123456789abcdef"  # >= 32 bytes: no PyJWT key warning
OTHER_SECRET = b"not-the-secret-the-gateway-knows-0123456789"
AUD = "roomcast-test"
ISS = "https://auth.example"
LEEWAY = 30.0


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ec(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY, RSA_OTHER = _rsa(), _rsa()
EC_KEY, EC_OTHER = _ec(), _ec()
RSA_PUB, RSA_OTHER_PUB, EC_PUB = pem(RSA_KEY), pem(RSA_OTHER), pem(EC_KEY)

SIGNERS: dict[str, Any] = {"HS256": SECRET, "RS256": RSA_KEY, "ES256": EC_KEY}

# The configuration under test: one secret and one public key of each family.
VERIFIER = TokenVerifier(
    secrets=(SECRET,), public_keys=(RSA_PUB, EC_PUB), audience=AUD, issuer=ISS, leeway_s=LEEWAY
)

DROP = object()  # a claims override that removes the claim


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "ada", "exp": now + 300, "aud": AUD, "iss": ISS, "iat": now}
    for name, value in over.items():
        if value is DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def make(alg: str = "HS256", key: Any = None, **over: Any) -> str:
    return jwt.encode(claims(**over), SIGNERS[alg] if key is None else key, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A compact JWS assembled by hand (for what PyJWT refuses to make); ``sign(input)``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    reason = str(info.value)
    assert reason, "a refusal says why"
    if len(token) >= 8:  # shorter ones may occur in any sentence
        assert token not in reason, "the reason must never echo the token"
    assert len(reason) <= 120, "the reason must fit in a close frame"
    return reason


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_valid_token_of_each_algorithm_is_accepted(alg: str) -> None:
    assert VERIFIER.verify(make(alg)) == Identity(user="ada")


ACCEPTED: list[Any] = [
    pytest.param(
        lambda: make(rooms=["user:{user}", "chat:*"], publish=["chat:*"]),
        Identity("ada", ("user:{user}", "chat:*"), ("chat:*",)),
        id="rooms-and-publish-claims",
    ),
    pytest.param(
        lambda: make(rooms="chat:*", publish="chat:news"),
        Identity("ada", ("chat:*",), ("chat:news",)),
        id="a-single-pattern-may-be-a-string",
    ),
    pytest.param(lambda: make(rooms=[], publish=[]), Identity("ada"), id="empty-claims"),
    pytest.param(lambda: make(sub="user-7"), Identity("user-7"), id="sub-is-the-user"),
    pytest.param(lambda: make(sub="u" * 256), Identity("u" * 256), id="sub-of-256-bytes"),
    pytest.param(lambda: make(aud=["other", AUD]), Identity("ada"), id="aud-list-holding-ours"),
    pytest.param(lambda: make(exp=now() - 10), Identity("ada"), id="expired-within-leeway"),
    pytest.param(lambda: make(nbf=now() + 10), Identity("ada"), id="nbf-within-leeway"),
    pytest.param(lambda: make(nbf=now() - 60), Identity("ada"), id="nbf-in-the-past"),
    pytest.param(lambda: make(iat=DROP), Identity("ada"), id="iat-is-optional"),
    pytest.param(lambda: make(role="admin", x=[1]), Identity("ada"), id="unknown-claims-ignored"),
    pytest.param(
        lambda: jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "k1"}),
        Identity("ada"),
        id="extra-header-fields",
    ),
]


@pytest.mark.parametrize(("token", "identity"), ACCEPTED)
def test_accepted_tokens_give_their_identity(token: Any, identity: Identity) -> None:
    assert VERIFIER.verify(token()) == identity


def test_rotated_secrets_each_verify() -> None:
    verifier = TokenVerifier(secrets=(OTHER_SECRET, SECRET), audience=AUD, issuer=ISS)
    assert verifier.verify(make("HS256", SECRET)).user == "ada"
    assert verifier.verify(make("HS256", OTHER_SECRET)).user == "ada"


def test_several_public_keys_of_both_families_in_any_order() -> None:
    # An RSA key listed before the EC one must not stop an ES256 token (and vice versa).
    for keys in [(RSA_OTHER_PUB, RSA_PUB, EC_PUB), (EC_PUB, RSA_OTHER_PUB, RSA_PUB)]:
        verifier = TokenVerifier(public_keys=keys, audience=AUD, issuer=ISS)
        assert verifier.verify(make("RS256")).user == "ada"
        assert verifier.verify(make("ES256")).user == "ada"
        assert verifier.verify(make("RS256", RSA_OTHER)).user == "ada"


def test_without_audience_or_issuer_configured_they_are_not_checked() -> None:
    verifier = TokenVerifier(secrets=(SECRET,))
    assert verifier.verify(make(aud="anything", iss="anyone")).user == "ada"
    assert verifier.verify(make(aud=DROP, iss=DROP)).user == "ada"


def test_leeway_is_configurable() -> None:
    strict = TokenVerifier(secrets=(SECRET,), audience=AUD, issuer=ISS, leeway_s=0)
    assert refused(strict, make(exp=now() - 10)) == "token expired"
    assert refused(strict, make(nbf=now() + 10)) == "token not valid yet"
    lax = TokenVerifier(secrets=(SECRET,), audience=AUD, issuer=ISS, leeway_s=120)
    assert lax.verify(make(exp=now() - 60)).user == "ada"
    assert lax.verify(make(nbf=now() + 60)).user == "ada"


def test_enabled_only_with_keys() -> None:
    assert not TokenVerifier().enabled
    assert TokenVerifier(secrets=(SECRET,)).enabled
    assert TokenVerifier(public_keys=(RSA_PUB,)).enabled


# ----------------------------------------------------------------------------------- refused


def _hs256_with_rsa_public_key() -> str:
    # Algorithm confusion: an HMAC over the token keyed with the (public) RSA PEM. PyJWT refuses
    # to make this, so it is signed by hand.
    return forge(
        {"alg": "HS256", "typ": "JWT"},
        claims(),
        lambda data: hmac.new(RSA_PUB.encode(), data, hashlib.sha256).digest(),
    )


def _tampered() -> str:
    header, _, signature = make().split(".")
    payload = b64(json.dumps(claims(sub="root")).encode())
    return f"{header}.{payload}.{signature}"


def _rs256_signature_under_es256_header() -> str:
    _, payload, signature = make("RS256").split(".")
    return f"{b64(json.dumps({'alg': 'ES256', 'typ': 'JWT'}).encode())}.{payload}.{signature}"


def _signature_altered() -> str:
    tok = make()
    return tok[:-4] + ("BBBB" if tok.endswith("AAAA") else "AAAA")


REFUSED: list[Any] = [
    # time
    pytest.param(lambda: make(exp=now() - 60), "token expired", id="expired"),
    pytest.param(lambda: make("RS256", exp=now() - 3600), "token expired", id="expired-rs256"),
    pytest.param(lambda: make(nbf=now() + 120), "token not valid yet", id="not-yet-valid"),
    pytest.param(lambda: make(exp="tomorrow"), "invalid token", id="exp-not-a-number"),
    pytest.param(lambda: make(nbf="now"), "invalid token", id="nbf-not-a-number"),
    # signature
    pytest.param(lambda: make("HS256", OTHER_SECRET), "invalid token signature", id="wrong-secret"),
    pytest.param(lambda: make("RS256", RSA_OTHER), "invalid token signature", id="wrong-rsa-key"),
    pytest.param(lambda: make("ES256", EC_OTHER), "invalid token signature", id="wrong-ec-key"),
    pytest.param(_tampered, "invalid token signature", id="tampered-payload"),
    pytest.param(
        _rs256_signature_under_es256_header, "invalid token signature", id="alg-header-swapped"
    ),
    pytest.param(_signature_altered, "invalid token signature", id="signature-altered"),
    # audience and issuer
    pytest.param(lambda: make(aud="someone-else"), "token audience not accepted", id="wrong-aud"),
    pytest.param(lambda: make(aud=["a", "b"]), "token audience not accepted", id="aud-list-lacks"),
    pytest.param(lambda: make(aud=DROP), "token lacks the aud claim", id="missing-aud"),
    pytest.param(lambda: make(iss="https://evil.example"), "token issuer not accepted", id="iss"),
    pytest.param(lambda: make(iss=DROP), "token lacks the iss claim", id="missing-iss"),
    # required claims
    pytest.param(lambda: make(exp=DROP), "token lacks the exp claim", id="missing-exp"),
    pytest.param(lambda: make(sub=DROP), "token lacks the sub claim", id="missing-sub"),
    pytest.param(lambda: make(sub=""), "token sub must be a non-empty string", id="empty-sub"),
    pytest.param(lambda: make(sub=42), "token sub must be a non-empty string", id="int-sub"),
    pytest.param(lambda: make(sub=["ada"]), "token sub must be a non-empty string", id="list-sub"),
    pytest.param(lambda: make(sub={"u": 1}), "token sub must be a non-empty string", id="obj-sub"),
    pytest.param(
        lambda: make(sub="é" * 129), "token sub is longer than 256 bytes", id="sub-over-256-bytes"
    ),
    # room claims
    pytest.param(
        lambda: make(rooms=5), "token claim rooms must be a list of room patterns", id="rooms-int"
    ),
    pytest.param(
        lambda: make(rooms=["chat:*", 7]),
        "token claim rooms must be a list of room patterns",
        id="rooms-with-a-number",
    ),
    pytest.param(
        lambda: make(rooms={"chat:*": True}),
        "token claim rooms must be a list of room patterns",
        id="rooms-object",
    ),
    pytest.param(
        lambda: make(rooms=None),
        "token claim rooms must be a list of room patterns",
        id="rooms-null",
    ),
    pytest.param(
        lambda: make(publish=[["chat:*"]]),
        "token claim publish must be a list of room patterns",
        id="publish-nested-list",
    ),
    pytest.param(
        lambda: make(publish=True),
        "token claim publish must be a list of room patterns",
        id="publish-bool",
    ),
    # algorithms
    pytest.param(
        lambda: jwt.encode(claims(), "", algorithm="none"),
        "token algorithm not accepted",
        id="alg-none",
    ),
    pytest.param(
        lambda: forge({"alg": "None", "typ": "JWT"}, claims()),
        "token algorithm not accepted",
        id="alg-None-by-hand",
    ),
    pytest.param(
        lambda: forge({"typ": "JWT"}, claims()), "token algorithm not accepted", id="no-alg"
    ),
    pytest.param(
        lambda: forge({"alg": ["HS256"]}, claims()), "token algorithm not accepted", id="alg-list"
    ),
    pytest.param(
        lambda: jwt.encode(claims(), SECRET + SECRET, algorithm="HS512"),
        "token algorithm not accepted",
        id="hs512",
    ),
    pytest.param(
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS512"),
        "token algorithm not accepted",
        id="rs512",
    ),
    pytest.param(
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="PS256"),
        "token algorithm not accepted",
        id="ps256",
    ),
    pytest.param(
        _hs256_with_rsa_public_key, "invalid token signature", id="hs256-keyed-with-public-key"
    ),
]


@pytest.mark.parametrize(("token", "reason"), REFUSED)
def test_refused_tokens_say_why(token: Any, reason: str) -> None:
    assert refused(VERIFIER, token()) == reason


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "é.é.é",
        "Bearer xyz",
        b64(b"[]") + "." + b64(b"{}") + ".",  # header not an object
        b64(b"not json") + "." + b64(b"{}") + ".",
        "!!!." + b64(b"{}") + ".sig",
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert refused(VERIFIER, token) == "malformed token"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'"ada"', b"\xff\xfe"],
    ids=["not-json", "list", "string", "not-utf8"],
)
def test_payload_that_is_not_a_claims_object(payload: bytes) -> None:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(payload)}"
    sig = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    assert refused(VERIFIER, f"{signing_input}.{b64(sig)}") == "invalid token"


def test_hs256_with_the_public_key_when_no_secret_is_configured() -> None:
    keys_only = TokenVerifier(public_keys=(RSA_PUB, EC_PUB), audience=AUD, issuer=ISS)
    assert refused(keys_only, _hs256_with_rsa_public_key()) == "token algorithm not accepted"
    assert refused(keys_only, make("HS256")) == "token algorithm not accepted"


def test_public_key_token_when_only_secrets_are_configured() -> None:
    secrets_only = TokenVerifier(secrets=(SECRET,), audience=AUD, issuer=ISS)
    assert refused(secrets_only, make("RS256")) == "token algorithm not accepted"
    assert refused(secrets_only, make("ES256")) == "token algorithm not accepted"


def test_wrong_key_type_is_refused() -> None:
    # An ES256 token where only RSA keys are configured, and an RS256 one with only EC keys.
    rsa_only = TokenVerifier(public_keys=(RSA_PUB,), audience=AUD, issuer=ISS)
    ec_only = TokenVerifier(public_keys=(EC_PUB,), audience=AUD, issuer=ISS)
    assert refused(rsa_only, make("ES256")) == "token algorithm not accepted"
    assert refused(ec_only, make("RS256")) == "token algorithm not accepted"
    assert ec_only.verify(make("ES256")).user == "ada"
    assert rsa_only.verify(make("RS256")).user == "ada"


def test_no_keys_at_all_refuses_every_token() -> None:
    for alg in ("HS256", "RS256", "ES256"):
        assert refused(TokenVerifier(), make(alg)) == "token algorithm not accepted"


def test_claim_checks_apply_with_every_key_family() -> None:
    for alg in ("RS256", "ES256"):
        assert refused(VERIFIER, make(alg, aud="x")) == "token audience not accepted"
        assert refused(VERIFIER, make(alg, sub=DROP)) == "token lacks the sub claim"
        assert refused(VERIFIER, make(alg, nbf=now() + 120)) == "token not valid yet"
