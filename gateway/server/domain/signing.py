"""Tokens in source URLs: signed, timed, bound to one source id and one purpose."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from gateway.errors import TokenExpired, TokenInvalid

Clock = Callable[[], float]

# Instances behind one load balancer verify each other's tokens; their clocks differ a little.
CLOCK_SKEW_TOLERANCE = 30.0


class Purpose(Enum):
    UPLOAD = "upload"
    DOWNLOAD = "download"


@dataclass(frozen=True)
class VerifiedToken:
    source_id: str
    issued_at: float
    expires_at: float


def _clocked_signer(clock: Clock) -> type[TimestampSigner]:
    class ClockedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return ClockedSigner


class UrlSigner:
    """Signs and verifies source-URL tokens.

    The last key of ``secret_keys`` signs; every key verifies, so keys rotate without breaking
    live URLs. Each purpose has its own salt, so an upload token never downloads and vice versa.
    """

    def __init__(self, secret_keys: Sequence[str], ttl_seconds: int, clock: Clock = time.time):
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        signer = _clocked_signer(clock)
        self._serializers = {
            purpose: URLSafeTimedSerializer(
                list(secret_keys), salt=f"sources-gateway.{purpose.value}", signer=signer
            )
            for purpose in Purpose
        }

    def now(self) -> float:
        return self._clock()

    def sign(self, purpose: Purpose, source_id: str) -> str:
        """Return a token that ``verify(purpose, source_id, token)`` accepts for ``ttl_seconds``."""
        return self._serializers[purpose].dumps({"id": source_id})

    def verify(self, purpose: Purpose, source_id: str, token: str | None) -> VerifiedToken:
        """Return the token's facts, or raise ``TokenExpired`` / ``TokenInvalid``."""
        if not token:
            raise TokenInvalid("missing token")
        serializer = self._serializers[purpose]
        try:
            # The age is judged below, not by itsdangerous: it calls a token signed one second
            # "in the future" expired, which is what clock skew between instances looks like.
            payload, issued = serializer.loads(token, return_timestamp=True)
        except SignatureExpired:
            # Caught before BadSignature (its parent): the signature was good, only time ran out.
            raise TokenExpired(f"{purpose.value} URL has expired; create a new source") from None
        except BadSignature:
            raise TokenInvalid(f"invalid {purpose.value} token") from None
        if not _binds(payload, source_id):
            raise TokenInvalid(f"invalid {purpose.value} token")
        issued_at = issued.timestamp()
        age = self._clock() - issued_at
        if age < -CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid(f"invalid {purpose.value} token")
        if age > self.ttl_seconds:
            raise TokenExpired(f"{purpose.value} URL has expired; create a new source")
        return VerifiedToken(source_id, issued_at, issued_at + self.ttl_seconds)


def _binds(payload: Any, source_id: str) -> bool:
    return isinstance(payload, dict) and payload.get("id") == source_id
