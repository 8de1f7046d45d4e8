"""API tokens: Bearer or HTTP Basic (empty user, token as password), compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config import TokenConfig
from gateway.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request: the configured token's name and the apps it may use."""

    name: str
    apps: tuple[str, ...]
    # The configured e-mail address, shown as a deployment's pusher (the platform's CLI shows it).
    email: str = ""

    def may_deploy(self, app: str) -> bool:
        return "*" in self.apps or app in self.apps

    def require_app(self, app: str) -> None:
        if not self.may_deploy(app):
            raise Forbidden(f"token {self.name!r} may not deploy app {app!r}")


def principals_of(tokens: Sequence[TokenConfig]) -> dict[str, Principal]:
    """Each configured token's principal, by name."""
    return {t.name: Principal(t.name, t.apps, t.email or "") for t in tokens}


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


# Another kind of credential (a JWT): its principal, None when the credential is not of its
# kind, ``Unauthorized`` when it is but does not hold (tampered, expired).
CredentialVerifier = Callable[[str], "Principal | None"]


class Authenticator:
    """Maps a presented token to its ``Principal``; timing does not tell which token matched.
    API tokens first, then each of ``verifiers`` in turn."""

    def __init__(
        self, tokens: Sequence[TokenConfig], verifiers: Sequence[CredentialVerifier] = ()
    ) -> None:
        principals = principals_of(tokens)
        self._entries = [(t.digest, principals[t.name]) for t in tokens]
        self._verifiers = list(verifiers)

    def authenticate(self, authorization: str | None) -> Principal:
        token = presented_token(authorization)
        if token is None:
            raise Unauthorized("missing API token: use 'Authorization: Bearer <token>'")
        return self.authenticate_token(token)

    def authenticate_token(self, token: str) -> Principal:
        """The principal of a bare credential (an API token, or what a verifier accepts)."""
        found = self.api_token(token)
        for verify in self._verifiers:
            if found is not None:
                break
            found = verify(token)
        if found is None:
            raise Unauthorized("invalid API token")
        return found

    def api_token(self, token: str) -> Principal | None:
        """The principal of a configured API token, None for anything else."""
        found: Principal | None = None
        for expected, principal in self._entries:
            # Every entry is compared, so the time taken does not tell which one matched.
            if same_secret(token, expected):
                found = principal
        return found
