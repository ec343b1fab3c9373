"""Connection tokens: signed JWTs verified with PyJWT (HS256 secrets, RS256/ES256 public keys).

``exp``, ``nbf``, ``aud`` and ``iss`` are checked (the last two when configured) with a
configurable leeway for clock skew; ``sub`` is required and becomes the connection's user id.
Claims ``rooms`` and ``publish`` (lists of room patterns) feed the room policy. A failure raises
:class:`TokenError` with a short reason safe to show the client (never the token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jwt

from gateway.policy import Identity

__all__ = ["MAX_SUB_BYTES", "TokenError", "TokenVerifier"]

MAX_SUB_BYTES = 256  # UTF-8; the router's bound on presence user ids (router/queries.py)

_HMAC = ("HS256",)
_PUBLIC = ("RS256", "ES256")


class TokenError(Exception):
    """A token we refuse; ``str()`` is the client-facing reason."""


@dataclasses.dataclass(frozen=True)
class TokenVerifier:
    secrets: tuple[bytes, ...] = ()  # HS256
    public_keys: tuple[str, ...] = ()  # PEM, RS256 or ES256
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.secrets or self.public_keys)

    def verify(self, token: str) -> Identity:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        if alg in _HMAC:
            keys: tuple[Any, ...] = self.secrets
        elif alg in _PUBLIC:
            keys = self.public_keys
        else:
            raise TokenError("token algorithm not accepted")
        if not keys:
            raise TokenError("token algorithm not accepted")
        last: Exception | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={
                        "require": ["exp", "sub"],
                        "verify_aud": self.audience is not None,
                        # sub is checked by _identity, with one reason whatever PyJWT's version.
                        "verify_sub": False,
                    },
                )
            except jwt.InvalidKeyError:
                continue  # a key of the other family (an RSA key for an ES256 token)
            except jwt.InvalidSignatureError as exc:
                last = exc  # maybe another key
                continue
            except jwt.ExpiredSignatureError:
                raise TokenError("token expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenError("token not valid yet") from None
            except jwt.InvalidAudienceError:
                raise TokenError("token audience not accepted") from None
            except jwt.InvalidIssuerError:
                raise TokenError("token issuer not accepted") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenError(f"token lacks the {exc.claim} claim") from None
            except jwt.PyJWTError:
                raise TokenError("invalid token") from None
            return _identity(claims)
        if last is None:
            raise TokenError("token algorithm not accepted")  # no key of its family
        raise TokenError("invalid token signature") from last


def _patterns(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TokenError(f"token claim {name} must be a list of room patterns")
    return tuple(value)


def _identity(claims: dict[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("token sub must be a non-empty string")
    if len(sub.encode()) > MAX_SUB_BYTES:
        # It becomes the presence user id (pushed to others, kept by the router): the same
        # bound as a backend's set_presence user id.
        raise TokenError(f"token sub is longer than {MAX_SUB_BYTES} bytes")
    return Identity(
        user=sub,
        join=_patterns(claims, "rooms"),
        publish=_patterns(claims, "publish"),
        claims=claims,
    )
