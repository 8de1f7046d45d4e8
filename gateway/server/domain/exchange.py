"""Short-lived bearers for the platform's own clients: ``POST /v1/tokens/exchange`` trades an API
token for a JWT, which is then accepted wherever the API token is, for the same apps.

HS256 with PyJWT. The key is derived from each of ``signing.secret_keys`` (never the secret itself,
so a JWT and a URL token never share a key): the last signs, all verify, so rotating the secret
keys rotates these too. The JWT names the token (``sub``); its apps are looked up in the
configuration when it is used, so a token removed from the configuration stops its JWTs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence

import jwt
from jwt.types import Options

from gateway.errors import Unauthorized
from gateway.server.domain.auth import Principal

ALGORITHM = "HS256"
# Marks the gateway's own JWTs, so another verifier's (an identity provider's) are left to it.
ISSUER = "sources-gateway/token-exchange"
_KEY_PURPOSE = b"sources-gateway token exchange JWT"
# Seconds of clock difference between instances tolerated on exp.
LEEWAY_SECONDS = 5
# The signature, algorithm and issuer are PyJWT's to check; times are checked on our clock.
_DECODE_OPTIONS: Options = {
    "require": ["exp", "iat", "sub", "iss"],
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}


def derived_key(secret: str) -> bytes:
    """The HS256 key for ``secret``: an HMAC of a fixed purpose, 32 bytes."""
    return hmac.new(secret.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


class ExchangedTokens:
    """Issues the exchange JWT and verifies it (``verify`` is a credential verifier for
    ``Authenticator``)."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        ttl_seconds: int,
        principals: Mapping[str, Principal],
        clock: Callable[[], float],
    ) -> None:
        # Newest first: a JWT signed with the current key is checked against it first.
        self._keys = [derived_key(secret) for secret in reversed(secret_keys)]
        self._ttl = ttl_seconds
        self._principals = dict(principals)
        self._clock = clock

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    def issue(self, principal: Principal) -> str:
        now = int(self._clock())
        claims = {"iss": ISSUER, "sub": principal.name, "iat": now, "exp": now + self._ttl}
        return jwt.encode(claims, self._keys[0], algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal | None:
        """The principal of one of our JWTs; None when ``token`` is not one (an API token, or
        another issuer's JWT); ``Unauthorized`` when it is ours but tampered or expired."""
        if not _is_ours(token):
            return None
        claims = self._claims(token)
        principal = self._principals.get(str(claims.get("sub")))
        if principal is None:
            raise Unauthorized("invalid API token: its token is no longer configured")
        return principal

    def _claims(self, token: str) -> dict[str, object]:
        for key in self._keys:
            try:
                claims: dict[str, object] = jwt.decode(
                    token, key, algorithms=[ALGORITHM], issuer=ISSUER, options=_DECODE_OPTIONS
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                break
            self._check_time(claims)
            return claims
        raise Unauthorized("invalid API token")

    def _check_time(self, claims: Mapping[str, object]) -> None:
        """Expiry judged on the gateway's clock (the one every other token uses)."""
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise Unauthorized("invalid API token")
        if exp + LEEWAY_SECONDS < self._clock():
            raise Unauthorized("token expired: exchange the API token again")


def _is_ours(token: str) -> bool:
    """A JWT whose unverified header and issuer say it is one of ours (nothing is trusted yet)."""
    if token.count(".") != 2:
        return False
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    return header.get("alg") == ALGORITHM and claims.get("iss") == ISSUER
