"""The token ``R`` of a resumable upload's URL: lets its bearer resume one upload of one source.

A purpose of its own (its own salt), so no source token is ever a resume token or the reverse.
The payload binds the source id and the upload id and carries the expiry (the upload's end), so
every instance enforces the expiry the issuing one gave; a token whose remaining life is longer
than the receiving instance's ``sources.resumable.ttl_seconds`` (plus clock tolerance) is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from itsdangerous import BadSignature, URLSafeSerializer

from gateway.errors import TokenExpired, TokenInvalid
from gateway.server.domain.signing import CLOCK_SKEW_TOLERANCE, Clock

SALT = "sources-gateway.resume"


class ResumeTokens:
    """Signs and verifies resume tokens with ``secret_keys`` (the last signs, all verify)."""

    def __init__(
        self, secret_keys: Sequence[str], ttl_seconds: int, clock: Clock = time.time
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._serializer = URLSafeSerializer(list(secret_keys), salt=SALT)

    def now(self) -> float:
        return self._clock()

    def sign(self, source_id: str, upload_id: str, expires_at: int) -> str:
        return self._serializer.dumps({"id": source_id, "uid": upload_id, "exp": expires_at})

    def verify(self, source_id: str, upload_id: str, token: str | None) -> int:
        """Return the upload's expiry if ``token`` lets its bearer resume this upload; else raise
        ``TokenInvalid`` (bad, tampered, another upload's) or ``TokenExpired``."""
        if not token:
            raise TokenInvalid("missing resume token")
        try:
            payload = self._serializer.loads(token)
        except BadSignature:
            raise TokenInvalid("invalid resume token") from None
        if (
            not isinstance(payload, dict)
            or payload.get("id") != source_id
            or payload.get("uid") != upload_id
            or type(payload.get("exp")) is not int
        ):
            raise TokenInvalid("invalid resume token")
        expires_at: int = payload["exp"]
        left = expires_at - self._clock()
        if left > self.ttl_seconds + CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid("invalid resume token")  # claims a longer life than allowed
        if left <= 0:
            raise TokenExpired("resume URL has expired; start a new upload")
        return expires_at
