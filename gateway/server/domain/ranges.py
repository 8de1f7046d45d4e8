"""Conditional and partial reads: ``Range``, ``If-None-Match``, and a download's headers."""

from __future__ import annotations

import base64
from datetime import UTC

from gateway.errors import RangeNotSatisfiable
from gateway.server.domain.storage import ObjectInfo


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
    if not dash or not _is_number(first, empty=True) or not _is_number(last, empty=True):
        return None
    if first == "":
        if last == "":
            return None
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(_position(last), size - 1) if last else size - 1
    return start, end


# Past any object's size (S3's limit is 5 TiB, 13 digits). Longer numbers are not converted:
# Python refuses int() of more than 4300 digits, and nothing that long means anything here.
_MAX_DIGITS = 20
_BEYOND_ANY_SIZE = 10**_MAX_DIGITS


def _is_number(text: str, *, empty: bool) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²" and other scripts' digits)."""
    return (empty and text == "") or (text.isascii() and text.isdigit())


def _position(digits: str) -> int:
    """A byte position or length from its digits; a huge one stands for "past the end"."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= _MAX_DIGITS else _BEYOND_ANY_SIZE


def etag_matches(header: str, etag: str) -> bool:
    def strip_weak(tag: str) -> str:
        return tag[2:] if tag.startswith("W/") else tag

    tags = [strip_weak(t.strip()) for t in header.split(",")]
    return "*" in tags or strip_weak(etag) in tags


def attachment(source_id: str) -> str:
    """The ``Content-Disposition`` of a download: saved as a file, never shown by a browser."""
    return f'attachment; filename="{source_id}.tar.gz"'


def download_headers(info: ObjectInfo, source_id: str) -> dict[str, str]:
    """The headers of every download answer (200, 206, 304, HEAD) of ``source_id``."""
    headers = {
        # Whatever type the uploader declared (text/html, say), a browser saves the archive
        # instead of rendering it with the gateway's origin.
        "Content-Disposition": attachment(source_id),
        "X-Content-Type-Options": "nosniff",
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
