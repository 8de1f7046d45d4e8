"""The token ``R`` of a resumable upload's URL: lets its bearer resume one upload of one source.

A purpose of its own (its own salt), so no source token is ever a resume token or the reverse.
The payload binds the source id and the upload id and carries the expiry (the upload's end), so
every instance enforces the expiry the issuing one gave; a token whose remaining life is longer
than the receiving instance's ``sources.resumable.ttl_seconds`` (plus clock tolerance) is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.server.domain.signing import Clock, ExpiringTokens

SALT = "sources-gateway.resume"


class ResumeTokens(ExpiringTokens):
    """Signs and verifies resume tokens with ``secret_keys`` (the last signs, all verify)."""

    noun = "resume token"

    def __init__(
        self, secret_keys: Sequence[str], ttl_seconds: int, clock: Clock = time.time
    ) -> None:
        super().__init__(secret_keys, ttl_seconds, SALT, clock)

    def now(self) -> float:
        return self._clock()

    def sign(self, source_id: str, upload_id: str, expires_at: int) -> str:
        return self._dumps({"id": source_id, "uid": upload_id}, expires_at)

    def verify(self, source_id: str, upload_id: str, token: str | None) -> int:
        """Return the upload's expiry if ``token`` lets its bearer resume this upload; else raise
        ``TokenInvalid`` (bad, tampered, another upload's) or ``TokenExpired``."""
        return self._expiry(
            token,
            {"id": source_id, "uid": upload_id},
            "resume URL has expired; start a new upload",
        )
