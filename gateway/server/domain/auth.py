"""API credentials: who a request's ``Authorization`` header says it is.

A presented token (Bearer, or HTTP Basic with the token as password) is offered to each
``Verifier`` in turn (the YAML tokens first, then the JWT kinds the configuration enables); the
first that recognises it answers with an ``Identity``, the same whatever kind of credential it
was. A verifier that does not recognise a token returns None; one that recognises it and refuses
it raises ``Unauthorized`` saying why. The per-identity request limits apply after that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.config import TokenConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.server.domain.limits import RateLimiter


@dataclass(frozen=True)
class Identity:
    """Who made an authenticated request: a name (a YAML token's name, a JWT's user), the apps
    it may deploy (``"*"``: all of them) and, when known, an email address."""

    name: str
    apps: tuple[str, ...]
    email: str | None = None

    def may_deploy(self, app: str) -> bool:
        return "*" in self.apps or app in self.apps

    def require_app(self, app: str) -> None:
        if not self.may_deploy(app):
            raise Forbidden(f"token {self.name!r} may not deploy app {app!r}")


class Verifier(Protocol):
    """One kind of API credential."""

    async def verify(self, token: str) -> Identity | None:
        """The token's identity; None when the token is not of this kind; ``Unauthorized``
        when it is, and is not valid (expired, bad signature...)."""
        ...


def presented_token(authorization: str | None) -> str | None:
    """Extract the token from an ``Authorization`` header, or None if there is none usable."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            # Not base64 (binascii.Error), non-ASCII characters (ValueError), not UTF-8.
            return None
        # curl -u :$TOKEN sends an empty user; any user name is accepted, the password is the token.
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def secret_digest(secret: str) -> bytes:
    # Header values reach us decoded as UTF-8 with surrogate escapes for bytes that are not:
    # encoded the same way, any bytes a client sends give a digest (that matches no token).
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def same_secret(presented: str, expected_digest: bytes) -> bool:
    """The one constant-time comparison of a presented secret: digests of equal length are
    compared, so the time taken tells neither the secret's length nor its content."""
    return hmac.compare_digest(secret_digest(presented), expected_digest)


class ConfiguredTokens:
    """The tokens listed in ``auth.tokens``; timing does not tell which token matched."""

    def __init__(self, tokens: Sequence[TokenConfig]) -> None:
        self._entries = [(t.digest, Identity(t.name, t.apps, t.email)) for t in tokens]

    async def verify(self, token: str) -> Identity | None:
        found: Identity | None = None
        for expected, identity in self._entries:
            # Every entry is compared, so the time taken does not tell which one matched.
            if same_secret(token, expected):
                found = identity
        return found


class Authenticator:
    """Maps an ``Authorization`` header to its ``Identity`` through ``verifiers`` (in order),
    then counts the request against the identity's rate limit, if there is one."""

    def __init__(self, verifiers: Sequence[Verifier], limiter: RateLimiter | None = None) -> None:
        self._verifiers = list(verifiers)
        self._limiter = limiter

    async def identify(self, authorization: str | None) -> Identity:
        """The identity of the header's token, not counted against any limit."""
        token = presented_token(authorization)
        if token is None:
            raise Unauthorized("missing API token: use 'Authorization: Bearer <token>'")
        for verifier in self._verifiers:
            identity = await verifier.verify(token)
            if identity is not None:
                return identity
        raise Unauthorized("invalid API token")

    async def authenticate(self, authorization: str | None) -> Identity:
        """The identity of an API request: ``Unauthorized`` without a valid token,
        ``TooManyRequests`` past its rate limit."""
        identity = await self.identify(authorization)
        if self._limiter is not None:
            self._limiter.take(identity.name)
        return identity
