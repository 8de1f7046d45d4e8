"""Tokens in source URLs: signed, timed, bound to one source id and one purpose."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import Any

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import int_to_bytes
from itsdangerous.signer import SigningAlgorithm

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
    # creator_tag() of who created the source; None in tokens from before it was signed in.
    created_by: str | None = None


def creator_tag(name: str) -> str:
    """What a token says of the identity that created its source: enough to count that
    identity's uploads (``auth.limits.concurrent_uploads``), and not its name, which would
    otherwise travel in every URL (and on to deployers and proxy logs)."""
    return _b64(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:12]).decode()


def _clocked_signer(clock: Clock) -> type[TimestampSigner]:
    class ClockedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._derived: dict[str | bytes | None, bytes] = {}

        def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
            # A hash of salt and key, the same every time: computed once per key.
            key = self._derived.get(secret_key)
            if key is None:
                key = self._derived[secret_key] = super().derive_key(secret_key)
            return key

    return ClockedSigner


def _b64(data: bytes) -> bytes:
    """itsdangerous' base64: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _HmacSha1(SigningAlgorithm):
    """itsdangerous' default algorithm (HMAC-SHA1) through hashlib's one-shot C function.

    Its own goes through ``hmac``'s pure-Python path, as its digest method is a Python function."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


class _Serializer(URLSafeTimedSerializer):
    """``URLSafeTimedSerializer`` that verifies with one signer whose keys are derived once, and
    signs without the generic layers (``UrlSigner.sign_all``). Tokens keep itsdangerous' format:
    any of its serializers reads them, and this one reads theirs."""

    def __init__(self, secret_keys: Sequence[str], salt: str, signer: type[TimestampSigner]):
        algorithm = _HmacSha1()
        kwargs = {"algorithm": algorithm, "digest_method": hashlib.sha1}
        super().__init__(list(secret_keys), salt=salt, signer=signer, signer_kwargs=kwargs)
        self._signer = signer(
            self.secret_keys, salt=self.salt, digest_method=hashlib.sha1, algorithm=algorithm
        )
        # The signing key's HMAC state after the key: each signature copies it.
        self._mac = hmac.new(self._signer.derive_key(), digestmod=hashlib.sha1)

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        if salt is not None and salt != self.salt:
            return super().make_signer(salt)  # type: ignore[return-value]
        return self._signer

    def signed(self, value: bytes) -> str:
        """``value`` (``payload.timestamp``) with this salt's signature: the token."""
        mac = self._mac.copy()
        mac.update(value)
        return (value + b"." + _b64(mac.digest())).decode()


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
            purpose: _Serializer(secret_keys, f"sources-gateway.{purpose.value}", signer)
            for purpose in Purpose
        }

    def now(self) -> float:
        return self._clock()

    def expiry(self) -> int:
        """When a token signed now stops working (whole seconds, as itsdangerous stamps them)."""
        return int(self._clock()) + self.ttl_seconds

    def sign(self, purpose: Purpose, source_id: str, expires_at: int | None = None) -> str:
        """Return a token for ``source_id`` that every instance accepts until ``expires_at``
        (default: ``ttl_seconds`` from now). The expiry is signed into the payload."""
        exp = self.expiry() if expires_at is None else expires_at
        return self._serializers[purpose].signed(self._value(source_id, exp))

    def sign_all(
        self, source_id: str, expires_at: int, created_by: str | None = None
    ) -> tuple[str, str]:
        """The upload and the download token of a new source: one payload and timestamp, and a
        signature for each purpose (every ``POST /v1/sources`` makes both). ``created_by`` is a
        ``creator_tag``."""
        value = self._value(source_id, expires_at, created_by)
        upload, download = self._serializers[Purpose.UPLOAD], self._serializers[Purpose.DOWNLOAD]
        return upload.signed(value), download.signed(value)

    def _value(self, source_id: str, expires_at: int, created_by: str | None = None) -> bytes:
        """What ``TimestampSigner.sign`` signs: the payload, a dot, the timestamp. The payload
        is itsdangerous' compact JSON of ``{"id": source_id, "exp": expires_at}`` (and
        ``"by": created_by`` when given), never compressed (a source id does not shrink)."""
        payload = f'{{"id":{encode_basestring_ascii(source_id)},"exp":{int(expires_at)}'
        if created_by is not None:
            payload += f',"by":{encode_basestring_ascii(created_by)}'
        payload += "}"
        timestamp = int_to_bytes(int(self._clock()))
        return _b64(payload.encode()) + b"." + _b64(timestamp)

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
        now = self._clock()
        if issued_at - now > CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid(f"invalid {purpose.value} token")
        expires_at = _signed_expiry(payload, issued_at, self.ttl_seconds)
        # The issuer's lifetime is honoured, within what this instance would ever hand out: a
        # longer claim comes from a misconfigured or foreign issuer and is not believed.
        if expires_at is None or expires_at - issued_at > self.ttl_seconds + CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid(f"invalid {purpose.value} token")
        if now > expires_at:
            raise TokenExpired(f"{purpose.value} URL has expired; create a new source")
        by = payload.get("by")
        return VerifiedToken(source_id, issued_at, expires_at, by if isinstance(by, str) else None)


def _binds(payload: Any, source_id: str) -> bool:
    return isinstance(payload, dict) and payload.get("id") == source_id


def _signed_expiry(payload: dict[str, Any], issued_at: float, ttl_seconds: int) -> float | None:
    """The expiry the token carries; None if it is not a whole number of seconds.

    A token without one was signed by an instance older than the expiry field: it is judged
    by this instance's ``ttl_seconds``, as such instances judged every token."""
    if "exp" not in payload:
        return issued_at + ttl_seconds
    exp = payload["exp"]
    if type(exp) is not int:
        return None
    return float(exp)


class ExpiringTokens:
    """Tokens of one purpose (``salt``): a signed payload binding some ids and an expiry ``exp``,
    signed with ``secret_keys`` (the last signs, all verify). Every instance enforces the expiry
    the issuing one gave; a remaining life longer than ``ttl_seconds`` (plus clock tolerance) is
    refused as invalid. ``noun`` names the token in errors."""

    noun = "token"

    def __init__(
        self, secret_keys: Sequence[str], ttl_seconds: int, salt: str, clock: Clock
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._serializer = URLSafeSerializer(list(secret_keys), salt=salt)

    def _dumps(self, claims: dict[str, Any], expires_at: int) -> str:
        return self._serializer.dumps({**claims, "exp": expires_at})

    def _expiry(self, token: str | None, claims: dict[str, Any], expired: str) -> int:
        """The expiry ``token`` carries if it is ours and binds ``claims``; else ``TokenInvalid``,
        or ``TokenExpired`` saying ``expired``."""
        if not token:
            raise TokenInvalid(f"missing {self.noun}")
        try:
            payload = self._serializer.loads(token)
        except BadSignature:
            raise TokenInvalid(f"invalid {self.noun}") from None
        if (
            not isinstance(payload, dict)
            or any(payload.get(name) != value for name, value in claims.items())
            or type(payload.get("exp")) is not int
        ):
            raise TokenInvalid(f"invalid {self.noun}")
        expires_at: int = payload["exp"]
        left = expires_at - self._clock()
        if left > self.ttl_seconds + CLOCK_SKEW_TOLERANCE:
            raise TokenInvalid(f"invalid {self.noun}")  # claims a longer life than allowed
        if left <= 0:
            raise TokenExpired(expired)
        return expires_at
