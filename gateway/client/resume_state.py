"""The small files that let an interrupted upload resume: one per upload under way, in the user's
cache directory (``$GATEWAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/sources-gateway``, else
``~/.cache/sources-gateway``), in ``uploads/``.

A file is named after what it is kept for (its ``kind``), the place it belongs to (an upload URL
without its token, an API URL) and the archive's sha256, so running the same command on the same
archive finds it, and another archive never does. It holds an upload resource's URL, whose token
is a credential: the directory is created 0700 and each file 0600, written whole (a temporary file
renamed), and removed when the upload ends. A file past its ``expires_at``, or unreadable, counts
as absent. Failing to write one costs only the resuming, never the upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE_ENV = "GATEWAY_CACHE_DIR"
# Private: the files hold URLs with their tokens.
DIR_MODE = 0o700


def cache_dir() -> Path:
    """The CLI's cache directory (see the module doc)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sources-gateway"


class ResumeFile:
    """The state file of one (kind, scope, archive sha256)."""

    def __init__(self, kind: str, scope: str, sha256: str) -> None:
        key = hashlib.sha256(f"{kind}\n{scope}\n{sha256}".encode()).hexdigest()[:40]
        self.path = cache_dir() / "uploads" / f"{kind}-{key}.json"

    def load(self) -> dict[str, Any] | None:
        """What was saved, unless it is missing, unreadable or expired (then it is removed)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            data = None
        expires_at = data.get("expires_at") if isinstance(data, dict) else None
        if not isinstance(expires_at, int | float) or expires_at <= time.time():
            self.remove()
            return None
        assert isinstance(data, dict)
        return data

    def save(self, data: dict[str, Any]) -> str | None:
        """Write ``data`` (with its ``expires_at``, epoch seconds); the reason when it could not."""
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out)
                os.replace(name, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                raise
        except OSError as exc:
            return f"{exc.strerror or exc} ({self.path.parent})"
        return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
