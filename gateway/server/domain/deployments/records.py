"""Deployment records and the events a deployer reports: the rules, with no I/O.

A record is the JSON object the gateway keeps per deployment: the platform's deployment object
and the log slot it was brought up to date with. Events are numbered by the deployer from 1; a
retry is recognised by comparing digests and a different event with a used number is a conflict
(their order and the output are the event log's business: ``event_log``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gateway.error_codes import Code
from gateway.errors import BadRequest, ValidationFailed
from gateway.statuses import STATUSES, TERMINAL_STATUSES

# A deployment's record as stored: ``deployment`` (the platform's object, ``new_record``) and
# ``log_slot``, the slot of the event log it was brought up to date with.
Record = dict[str, Any]

EVENT_TYPES = ("status", "log")
# One log event carries at most this much text (UTF-8 bytes): a line or a burst of lines, not a
# whole build log; larger output is sent as several events.
MAX_EVENT_CONTENT = 64 * 1024
# Event numbers are stored zero-padded to 10 digits so that keys sort in number order.
MAX_EVENT_ID = 9_999_999_999
# The platform's limit on a post-deploy command.
MAX_HOOK_LENGTH = 1024
# The platform's pagination: 30 a page unless asked, never more than 100.
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
# A page number past any real list; larger ones are read as this one.
MAX_PAGE = 10**9


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class Event:
    """One event as the deployer sent it: ``status`` for a status event, ``content`` for a log."""

    id: int
    type: Literal["status", "log"]
    status: str | None = None
    content: str | None = None

    def payload(self) -> dict[str, Any]:
        if self.type == "status":
            return {"id": self.id, "type": "status", "status": self.status}
        return {"id": self.id, "type": "log", "content": self.content}

    def digest(self) -> str:
        """Identifies the event as sent, so that a retry is told apart from a different event."""
        canonical = json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_event(data: Mapping[str, Any]) -> Event:
    """Read ``{"id", "type": "status", "status"}`` or ``{"id", "type": "log", "content"}``;
    ``ValidationFailed`` (422) naming every bad field. Unknown keys are ignored."""
    errors: dict[str, list[str]] = {}
    event_id = data.get("id")
    if isinstance(event_id, bool) or not isinstance(event_id, int):
        errors["id"] = ["must be an integer"]
    elif not 1 <= event_id <= MAX_EVENT_ID:
        errors["id"] = [f"must be between 1 and {MAX_EVENT_ID}"]
    kind = data.get("type")
    status = data.get("status")
    content = data.get("content")
    if kind == "status":
        if not isinstance(status, str) or status not in STATUSES:
            errors["status"] = ["must be one of " + ", ".join(STATUSES)]
    elif kind == "log":
        if not isinstance(content, str):
            errors["content"] = ["must be a string"]
        elif len(content.encode("utf-8", "surrogatepass")) > MAX_EVENT_CONTENT:
            errors["content"] = [f"must be at most {MAX_EVENT_CONTENT} bytes"]
        elif _has_surrogates(content):
            errors["content"] = ["must be valid UTF-8 text"]
    else:
        errors["type"] = ["must be one of " + ", ".join(EVENT_TYPES)]
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(event_id, int)
    if kind == "status":
        return Event(event_id, "status", status=status)
    return Event(event_id, "log", content=content)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def hook_errors(hook: Any) -> list[str]:
    """Problems with a ``postdeploy_hook`` value (None: no hook, fine)."""
    if hook is None:
        return []
    if not isinstance(hook, str):
        return ["must be a string"]
    errors = []
    if len(hook) > MAX_HOOK_LENGTH:
        errors.append(f"must be at most {MAX_HOOK_LENGTH} characters")
    if not hook.isprintable():
        errors.append("must contain printable characters only")
    return errors


# ---------------------------------------------------------------------------------------------
# Records


def new_record(
    deployment_id: str,
    app: str,
    created_at: str,
    git_ref: str | None,
    source_url: str,
    postdeploy_hook: str | None,
    pusher: str,
    pusher_email: str = "",
) -> dict[str, Any]:
    """The record of a freshly accepted deployment: ``queued``, no output yet."""
    return {
        "deployment": {
            "id": deployment_id,
            "app_id": app,
            "created_at": created_at,
            "finished_at": None,
            "status": "queued",
            "git_ref": git_ref,
            "type": "archive",
            "source_url": source_url,
            "postdeploy_hook": postdeploy_hook,
            "pusher": {"name": pusher, "email": pusher_email},
        },
        # The log slot whose state ``deployment`` shows (``event_log``).
        "log_slot": 0,
    }


def deployment_view(record: Mapping[str, Any], output_url: str) -> dict[str, Any]:
    """The platform's deployment object for a record, with ``links.output``, the pusher as the
    platform's clients read it (``id``, ``username``, ``email``; ``name`` as before) and the
    ``duration`` in seconds once finished (null until then)."""
    view = dict(record["deployment"])
    pusher = view.get("pusher") or {}
    name = str(pusher.get("name", ""))
    view["pusher"] = {
        "id": name,
        "username": name,
        "email": str(pusher.get("email") or ""),
        "name": name,
    }
    view["duration"] = duration_seconds(view.get("created_at"), view.get("finished_at"))
    view["links"] = {"output": output_url}
    return view


def duration_seconds(created_at: Any, finished_at: Any) -> int | None:
    """Whole seconds from ``created_at`` to ``finished_at`` (RFC 3339), None if unfinished."""
    if not isinstance(created_at, str) or not isinstance(finished_at, str):
        return None
    try:
        started = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        finished = datetime.fromisoformat(finished_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0, round((finished - started).total_seconds()))


def record_status(record: Mapping[str, Any]) -> str:
    return str(record["deployment"]["status"])


def is_finished(record: Mapping[str, Any]) -> bool:
    return is_terminal(record_status(record))


def sse_message(slot: int, shown: Mapping[str, Any]) -> bytes:
    """One server-sent event: ``id`` (its place in the log), ``event`` (status or log) and the
    JSON on one data line."""
    data = json.dumps(shown, separators=(",", ":"))
    return f"id: {slot}\nevent: {shown['type']}\ndata: {data}\n\n".encode()


def parse_last_event_id(value: str | None) -> int:
    """The number to resume after (0: from the start). A malformed header starts over."""
    if value is None:
        return 0
    value = value.strip()
    if not _ascii_digits(value) or len(value) > len(str(MAX_EVENT_ID)):
        return 0
    return int(value)


def _ascii_digits(text: str) -> bool:
    """0-9 only: ``str.isdigit`` also accepts digits ``int`` cannot read (superscripts)."""
    return text.isascii() and text.isdigit()


# ---------------------------------------------------------------------------------------------
# Pagination


@dataclass(frozen=True)
class Page:
    number: int
    per_page: int

    @property
    def start(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def stop(self) -> int:
        return self.start + self.per_page


def _positive_int(query: Mapping[str, str], name: str, default: int, ceiling: int) -> int:
    """``name``'s value, read as ``ceiling`` above it (however many digits it has)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    digits = raw.lstrip("0")
    if not _ascii_digits(raw) or not digits:
        raise BadRequest(f"{name} must be a positive integer", code=Code.BAD_REQUEST)
    if len(digits) > len(str(ceiling)):
        return ceiling
    return min(int(digits), ceiling)


def parse_page(query: Mapping[str, str]) -> Page:
    """``page`` (from 1) and ``per_page`` (above 100 is read as 100, like the platform)."""
    number = _positive_int(query, "page", 1, MAX_PAGE)
    per_page = _positive_int(query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    return Page(number, per_page)


def pagination(page: Page, total_count: int) -> dict[str, Any]:
    """The platform's ``meta.pagination`` for ``page`` of ``total_count`` items."""
    total_pages = math.ceil(total_count / page.per_page)
    return {
        "current_page": page.number,
        "prev_page": page.number - 1 if page.number > 1 else None,
        "next_page": page.number + 1 if page.number < total_pages else None,
        "total_pages": total_pages,
        "total_count": total_count,
    }
