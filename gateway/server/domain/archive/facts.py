"""What the archive check found (kept as object tags by ``adapters/archive_tags.py``, shown on
downloads as ``X-Archive-*`` headers by ``http/archive_headers.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
