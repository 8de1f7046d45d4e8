"""The token in a job's ``events_url``: lets the deployer report on one deployment of one app.

A purpose of its own (its own salt), so no source token is ever an events token or the reverse.
The payload binds the app and the deployment id and carries the expiry, so every instance
enforces the expiry the issuing one gave; a token whose remaining life is longer than the
receiving instance's ``events_ttl_seconds`` (plus clock tolerance) is refused as invalid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.server.domain.signing import Clock, ExpiringTokens

SALT = "sources-gateway.deployment-events"


class EventsTokens(ExpiringTokens):
    """Signs and verifies events tokens with ``secret_keys`` (the last signs, all verify)."""

    noun = "events token"

    def __init__(
        self, secret_keys: Sequence[str], ttl_seconds: int, clock: Clock = time.time
    ) -> None:
        super().__init__(secret_keys, ttl_seconds, SALT, clock)

    def sign(self, app: str, deployment_id: str) -> str:
        expires = int(self._clock()) + self.ttl_seconds
        return self._dumps({"app": app, "id": deployment_id}, expires)

    def verify(self, app: str, deployment_id: str, token: str | None) -> None:
        """Return if ``token`` lets its bearer report on this deployment; else raise
        ``TokenInvalid`` (bad, tampered, another deployment's) or ``TokenExpired``."""
        self._expiry(token, {"app": app, "id": deployment_id}, "events token has expired")
