"""The token in a job's ``events_url``: lets the deployer report on one deployment of one app.

A purpose of its own (its own salt), so no source token is ever an events token or the reverse.
The payload binds the app and the deployment id and carries the expiry, so every instance
enforces the expiry the issuing one gave; a token whose remaining life is longer than the
receiving instance's ``events_ttl_seconds`` (plus clock tolerance) is refused as invalid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from itsdangerous import BadSignature, URLSafeSerializer

from gateway.errors import TokenExpired, TokenInvalid
from gateway.server.domain.signing import CLOCK_SKEW_TOLERANCE, Clock

SALT = "sources-gateway.deployment-events"


class EventsTokens:
    """Signs and verifies events tokens with ``secret_keys`` (the last signs, all verify)."""

    def __init__(
        self, secret_keys: Sequence[str], ttl_seconds: int, clock: Clock = time.time
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._serializer = URLSafeSerializer(list(secret_keys), salt=SALT)

    def sign(self, app: str, deployment_id: str) -> str:
        expires = int(self._clock()) + self.ttl_seconds
        return self._serializer.dumps({"app": app, "id": deployment_id, "exp": expires})

    def verify(self, app: str, deployment_id: str, token: str | None) -> None:
        """Return if ``token`` lets its bearer report on this deployment; else raise
        ``TokenInvalid`` (bad, tampered, another deployment's) or ``TokenExpired``."""
        if not token:
            raise TokenInvalid("missing events token")
        try:
            payload = self._serializer.loads(token)
        except BadSignature:
            raise TokenInvalid("invalid events token") from None
        if (
            not isinstance(payload, dict)
            or payload.get("app") != app
            or payload.get("id") != deployment_id
            or not isinstance(payload.get("exp"), int)
        ):
            raise TokenInvalid("invalid events token")
        left = payload["exp"] - self._clock()
        if left > self.ttl_seconds + CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid("invalid events token")  # claims a longer life than allowed
        if left <= 0:
            raise TokenExpired("events token has expired")
