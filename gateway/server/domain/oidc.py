"""Bearer JWTs from the operator's OpenID Connect provider (``auth.jwt``), verified with PyJWT.

A token is this verifier's when it is a JWT whose (unverified) ``iss`` is the configured issuer;
any other token is left to the other verifiers. Then everything is checked: an allowed public-key
algorithm whose key type matches the provider's key named by ``kid``, the signature, ``iss``,
``aud``, ``exp`` (required) and ``nbf`` with ``leeway_seconds`` of clock tolerance, and a user in
``name_claim``. The apps the token may deploy come from ``apps_claim``: a list of names, or a
string of names separated by spaces (as OAuth scopes are).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import jwt
from jwt import PyJWK

from gateway.config_auth import JwtConfig
from gateway.errors import Unauthorized
from gateway.server.domain.auth import Identity

log = logging.getLogger(__name__)

# Three base64url segments: the compact serialization of a JWS, and nothing else.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The key type each algorithm family signs with: a token naming RS256 over an EC key (or any
# mismatch) is refused before PyJWT is asked.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class SigningKeys(Protocol):
    """The provider's public keys (``gateway.server.adapters.jwks``)."""

    async def key_for(self, kid: str | None) -> PyJWK | None:
        """The signing key named ``kid`` (the only key, when ``kid`` is None and there is only
        one), or None when the provider has no such key."""
        ...


class OidcTokens:
    """Verifies the provider's bearer JWTs into ``Identity`` objects."""

    def __init__(self, config: JwtConfig, keys: SigningKeys) -> None:
        self._config = config
        self._keys = keys

    async def verify(self, token: str) -> Identity | None:
        if not _JWT_SHAPE.fullmatch(token):
            return None
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        if unverified.get("iss") != self._config.issuer:
            return None  # another issuer's token: not ours to judge
        claims = await self._verified_claims(token, header)
        return self._identity(claims)

    async def _verified_claims(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        config = self._config
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise Unauthorized("bearer token: signature algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("invalid bearer token")
        key = await self._keys.key_for(kid)
        if key is None:
            raise Unauthorized("bearer token signed by a key the identity provider does not list")
        if _KEY_TYPES.get(alg[:2]) != key.key_type:
            raise Unauthorized("bearer token: algorithm does not match the provider's key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("bearer token is not meant for this service (audience)") from None
        except jwt.InvalidTokenError as exc:
            # The class name only: PyJWT's messages may quote claims.
            log.info("bearer token refused: %s", type(exc).__name__)
            raise Unauthorized("invalid bearer token") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = claims.get(self._config.name_claim)
        if not isinstance(name, str) or not name:
            raise Unauthorized(f"bearer token has no {self._config.name_claim!r} claim")
        email = claims.get("email")
        return Identity(
            name,
            apps_of(claims.get(self._config.apps_claim)),
            email if isinstance(email, str) else "",
        )


def apps_of(claim: Any) -> tuple[str, ...]:
    """The apps named by a claim: a list of names or a space-separated string; none otherwise."""
    if isinstance(claim, str):
        return tuple(claim.split())
    if isinstance(claim, list):
        return tuple(app for app in claim if isinstance(app, str) and app)
    return ()
