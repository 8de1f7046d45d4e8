"""The archive check's findings kept with the object, as its tags.

Set with the sha256 once the upload completes (the metadata of a streamed PUT is fixed before the
body is read). Tag values may hold only letters, digits, spaces and ``+ - = . _ : / @``, so the
root and the problem, which are free text, are stored base64url.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from gateway.server.domain.archive.facts import ArchiveFacts

# S3's limit on a tag value.
_TAG_VALUE_MAX = 256
# Raw bytes of a problem kept in its tag: its base64 must fit the tag value.
_PROBLEM_TAG_BYTES = _TAG_VALUE_MAX // 4 * 3
_TAGS = {
    "entries": "archive-entries",
    "files": "archive-files",
    "inflated_size": "archive-inflated-size",
}
_ROOT_TAG = "archive-root"
_PROBLEM_TAG = "archive-problem"


def archive_tags(facts: ArchiveFacts) -> dict[str, str]:
    tags = {tag: str(getattr(facts, name)) for name, tag in _TAGS.items()}
    if facts.root is not None:
        encoded = _b64(facts.root.encode())
        if len(encoded) <= _TAG_VALUE_MAX:  # a longer root is not kept: no header for it
            tags[_ROOT_TAG] = encoded
    if facts.problem is not None:
        raw = facts.problem.encode()[:_PROBLEM_TAG_BYTES]
        tags[_PROBLEM_TAG] = _b64(raw.decode("utf-8", "ignore").encode())
    return tags


def archive_from_tags(tags: Mapping[str, str]) -> ArchiveFacts | None:
    """The facts kept by ``archive_tags``, or None for an object stored without a check."""
    try:
        counts = {name: int(tags[tag]) for name, tag in _TAGS.items()}
        root = _unb64(tags[_ROOT_TAG]) if _ROOT_TAG in tags else None
        problem = _unb64(tags[_PROBLEM_TAG]) if _PROBLEM_TAG in tags else None
    except (KeyError, ValueError, binascii.Error):
        return None
    return ArchiveFacts(root=root, problem=problem, **counts)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _unb64(value: str) -> str:
    return base64.urlsafe_b64decode(value.encode()).decode("utf-8", "replace")
