"""What the archive check found, and how it is kept with the object and shown on downloads.

Kept as object tags (set with the sha256 once the upload completes: the metadata of a streamed
PUT is fixed before the body is read). Tag values may hold only letters, digits, spaces and
``+ - = . _ : / @``, so the root and the problem, which are free text, are stored base64url.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

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
# Characters left as they are in X-Archive-Root and X-Archive-Problem; the rest is
# percent-encoded UTF-8, so any name fits an HTTP header.
_HEADER_SAFE = "/-._~!$&'()*+,;=:@"


@dataclass(frozen=True)
class ArchiveFacts:
    """What the check found. ``problem``: why ``enforce`` would have refused (``report`` mode)."""

    entries: int
    files: int
    inflated_size: int
    root: str | None
    problem: str | None = None

    def __post_init__(self) -> None:
        if self.problem is not None:  # counted up to the problem: no single root is known
            object.__setattr__(self, "root", None)

    def as_json(self) -> dict[str, Any]:
        facts = asdict(self)
        if self.problem is None:
            del facts["problem"]
        return facts

    def tags(self) -> dict[str, str]:
        tags = {tag: str(getattr(self, name)) for name, tag in _TAGS.items()}
        if self.root is not None:
            encoded = _b64(self.root.encode())
            if len(encoded) <= _TAG_VALUE_MAX:  # a longer root is not kept: no header for it
                tags[_ROOT_TAG] = encoded
        if self.problem is not None:
            raw = self.problem.encode()[:_PROBLEM_TAG_BYTES]
            tags[_PROBLEM_TAG] = _b64(raw.decode("utf-8", "ignore").encode())
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ArchiveFacts | None:
        """The facts kept by ``tags()``, or None for an object stored without a check."""
        try:
            counts = {name: int(tags[tag]) for name, tag in _TAGS.items()}
            root = _unb64(tags[_ROOT_TAG]) if _ROOT_TAG in tags else None
            problem = _unb64(tags[_PROBLEM_TAG]) if _PROBLEM_TAG in tags else None
        except (KeyError, ValueError, binascii.Error):
            return None
        return cls(root=root, problem=problem, **counts)

    def headers(self) -> dict[str, str]:
        """``X-Archive-*`` response headers of a download."""
        headers = {
            "X-Archive-Entries": str(self.entries),
            "X-Archive-Files": str(self.files),
            "X-Archive-Inflated-Size": str(self.inflated_size),
        }
        if self.root is not None:
            headers["X-Archive-Root"] = quote(self.root, safe=_HEADER_SAFE)
        if self.problem is not None:
            headers["X-Archive-Problem"] = quote(self.problem, safe=_HEADER_SAFE + " ")
        return headers


HEADERS = (
    "X-Archive-Entries",
    "X-Archive-Files",
    "X-Archive-Inflated-Size",
    "X-Archive-Root",
    "X-Archive-Problem",
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _unb64(value: str) -> str:
    return base64.urlsafe_b64decode(value.encode()).decode("utf-8", "replace")
