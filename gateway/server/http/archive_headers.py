"""The archive check's findings on a download: the ``X-Archive-*`` response headers."""

from __future__ import annotations

from urllib.parse import quote

from gateway.server.domain.archive.facts import ArchiveFacts

HEADERS = (
    "X-Archive-Entries",
    "X-Archive-Files",
    "X-Archive-Inflated-Size",
    "X-Archive-Root",
    "X-Archive-Problem",
)
# Characters left as they are in X-Archive-Root and X-Archive-Problem; the rest is
# percent-encoded UTF-8, so any name fits an HTTP header.
_HEADER_SAFE = "/-._~!$&'()*+,;=:@"


def archive_headers(facts: ArchiveFacts) -> dict[str, str]:
    """``X-Archive-*`` response headers of a download."""
    headers = {
        "X-Archive-Entries": str(facts.entries),
        "X-Archive-Files": str(facts.files),
        "X-Archive-Inflated-Size": str(facts.inflated_size),
    }
    if facts.root is not None:
        headers["X-Archive-Root"] = quote(facts.root, safe=_HEADER_SAFE)
    if facts.problem is not None:
        headers["X-Archive-Problem"] = quote(facts.problem, safe=_HEADER_SAFE + " ")
    return headers
