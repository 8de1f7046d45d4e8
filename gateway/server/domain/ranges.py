"""Conditional and partial reads: ``Range``, ``If-None-Match``, and a download's headers."""

from __future__ import annotations

import base64
from datetime import UTC

from gateway.errors import RangeNotSatisfiable
from gateway.server.adapters.store import ObjectInfo


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, or None to send the whole object.

    A header we do not understand (other unit, several ranges, malformed) is ignored, as RFC 9110
    allows; a well-formed range that starts past the end raises ``RangeNotSatisfiable``."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return start, end


def etag_matches(header: str, etag: str) -> bool:
    def strip_weak(tag: str) -> str:
        return tag[2:] if tag.startswith("W/") else tag

    tags = [strip_weak(t.strip()) for t in header.split(",")]
    return "*" in tags or strip_weak(etag) in tags


def download_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": info.etag,
        "Last-Modified": info.last_modified.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Accept-Ranges": "bytes",
        # The URL carries a credential: shared caches must not keep what it returns.
        "Cache-Control": "private, no-store",
    }
    if info.sha256:
        headers["X-Checksum-Sha256"] = info.sha256
        digest = base64.b64encode(bytes.fromhex(info.sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return headers
