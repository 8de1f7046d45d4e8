"""API credentials: who a request's ``Authorization`` header says it is.

A presented token (Bearer, or HTTP Basic with the token as password) is compared with the YAML
tokens, then offered to each credential verifier in turn (the exchanged JWTs, the identity
provider's JWTs); the first that recognises it answers with an ``Identity``, the same whatever
kind of credential it was. A verifier that does not recognise a token returns None; one that
recognises it and refuses it raises ``Unauthorized`` saying why. The per-identity request limit
applies after that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.config import TokenConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.server.domain.limits import RateLimiter


@dataclass(frozen=True)
class Identity:
    """Who made an authenticated request: a name (a YAML token's name, a JWT's user), the apps
    it may deploy (``"*"``: all of them) and, when known, an e-mail address (shown as a
    deployment's pusher; the platform's CLI shows it)."""

    name: str
    apps: tuple[str, ...]
    email: str = ""

    def may_deploy(self, app: str) -> bool:
        return "*" in self.apps or app in self.apps

    def require_app(self, app: str) -> None:
        if not self.may_deploy(app):
            raise Forbidden(f"token {self.name!r} may not deploy app {app!r}")


# The name the platform-API handlers use for an identity.
Principal = Identity

# Another kind of credential (a JWT: the exchange's, the identity provider's): its identity,
# None when the credential is not of its kind, ``Unauthorized`` when it is but does not hold
# (tampered, expired). Either a plain function or a coroutine function.
CredentialVerifier = Callable[[str], "Identity | Awaitable[Identity | None] | None"]


def principals_of(tokens: Sequence[TokenConfig]) -> dict[str, Identity]:
    """Each configured token's identity, by name."""
    return {t.name: Identity(t.name, t.apps, t.email or "") for t in tokens}


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


class Authenticator:
    """Maps a presented token to its ``Identity``: the configured API tokens first (compared in
    constant time; timing does not tell which matched), then each of ``verifiers`` in turn.
    ``authenticate`` then counts the request against the identity's rate limit, if any."""

    def __init__(
        self,
        tokens: Sequence[TokenConfig],
        verifiers: Sequence[CredentialVerifier] = (),
        limiter: RateLimiter | None = None,
    ) -> None:
        principals = principals_of(tokens)
        self._entries = [(t.digest, principals[t.name]) for t in tokens]
        self._verifiers = list(verifiers)
        self._limiter = limiter

    async def authenticate(self, authorization: str | None) -> Identity:
        """The identity of an API request: ``Unauthorized`` without a valid token,
        ``TooManyRequests`` past its rate limit."""
        identity = await self.identify(authorization)
        if self._limiter is not None:
            self._limiter.take(identity.name)
        return identity

    async def identify(self, authorization: str | None) -> Identity:
        """The identity of the header's token, not counted against any limit."""
        token = presented_token(authorization)
        if token is None:
            raise Unauthorized("missing API token: use 'Authorization: Bearer <token>'")
        return await self.authenticate_token(token)

    async def authenticate_token(self, token: str) -> Identity:
        """The identity of a bare credential (an API token, or what a verifier accepts)."""
        found = self.api_token(token)
        for verify in self._verifiers:
            if found is not None:
                break
            result = verify(token)
            found = await result if inspect.isawaitable(result) else result
        if found is None:
            raise Unauthorized("invalid API token")
        return found

    def api_token(self, token: str) -> Identity | None:
        """The identity of a configured API token, None for anything else."""
        found: Identity | None = None
        for expected, identity in self._entries:
            # Every entry is compared, so the time taken does not tell which one matched.
            if same_secret(token, expected):
                found = identity
        return found
