"""A deployment's event log: the rules that put a deployer's events in one order, with no I/O.

Events arrive in any order, on any instance, several at once. Each event the gateway accepts
takes the next *slot* of the deployment's log (1, 2, 3...: the order of acceptance), and the
entry written there carries the deployment's state after it (output kept so far, whether it was
cut, the status), computed from the entry in the slot before. A slot is created once (S3's
``If-None-Match: *``) by whoever computed it from the previous one, so the state at every slot is
exact however many instances write at once, and a follower reading the slots in order sees every
accepted event, whatever its number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import EventConflict, TooManyEvents
from gateway.server.domain.deployments.records import Event, is_terminal

# Events one deployment keeps: a build log of 64 KiB events fills the default 4 MiB output in 64
# of them, so 10,000 leaves room for chatty deployers while bounding the objects (and the reads
# of a replay) per deployment. The last slot is kept for a final status, so a deployer that ran
# out of events can still finish its deployment.
MAX_EVENTS = 10_000
# Entries compacted into one chunk object, so reading a whole log costs about one GET per
# CHUNK_EVENTS events (and at most CHUNK_EVENTS - 1 GETs of single entries at the head).
CHUNK_EVENTS = 100
# One slot of the log as stored: ``slot``, the ``event``, the ``state`` after it.
Entry = dict[str, Any]


def initial_state() -> dict[str, Any]:
    """The state of a deployment before its first event."""
    return {
        "status": "queued",
        "status_id": 0,
        "finished_at": None,
        "kept_bytes": 0,
        "received_bytes": 0,
        "cut": False,
        "max_id": 0,
    }


def entry_slot(entry: Mapping[str, Any] | None) -> int:
    return 0 if entry is None else int(entry["slot"])


def entry_state(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    return initial_state() if entry is None else dict(entry["state"])


def next_entry(
    previous: Mapping[str, Any] | None, event: Event, received_at: str, max_output_bytes: int
) -> dict[str, Any]:
    """The entry for ``event`` in the slot after ``previous`` (None: the first slot).

    ``EventConflict`` once a final status is in the log (whatever the numbers: a final status
    ends the deployment), ``TooManyEvents`` past ``MAX_EVENTS``. A log event keeps what fits in
    ``max_output_bytes`` (``cut``: the first that did not fit whole) or nothing (``dropped``)."""
    state = entry_state(previous)
    slot = entry_slot(previous) + 1
    if is_terminal(str(state["status"])):
        raise EventConflict("the deployment has finished; no more events")
    final = event.type == "status" and is_terminal(str(event.status))
    if slot > MAX_EVENTS or (slot == MAX_EVENTS and not final):
        raise TooManyEvents(
            f"the deployment holds {MAX_EVENTS - 1} events, the most it keeps; "
            "only a final status is still accepted"
        )
    stored = event.payload()
    stored["received_at"] = received_at
    stored["digest"] = event.digest()
    state["max_id"] = max(int(state["max_id"]), event.id)
    if event.type == "log":
        _keep_output(stored, state, max_output_bytes)
    elif final:
        state.update(status=event.status, status_id=event.id, finished_at=received_at)
    elif event.id > int(state["status_id"]):
        # Statuses sent out of order: the deployer's latest (by number) is the current one.
        state.update(status=event.status, status_id=event.id)
    return {"slot": slot, "event": stored, "state": state}


def _keep_output(stored: dict[str, Any], state: dict[str, Any], max_output_bytes: int) -> None:
    content = str(stored["content"])
    size = len(content.encode("utf-8"))
    state["received_bytes"] = int(state["received_bytes"]) + size
    if state["cut"]:
        stored["content"] = ""
        stored["dropped"] = True
        return
    room = max(0, max_output_bytes - int(state["kept_bytes"]))
    kept = _utf8_prefix(content, room)
    if len(kept) < len(content):
        stored["content"] = kept
        stored["cut"] = True
        state["cut"] = True
    state["kept_bytes"] = int(state["kept_bytes"]) + len(kept.encode("utf-8"))


def _utf8_prefix(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding is at most ``limit`` bytes."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


# ---------------------------------------------------------------------------------------------
# What readers see


def cut_line(max_output_bytes: int) -> str:
    return f"[output cut: more than {max_output_bytes} bytes; the rest was not kept]\n"


def _as_lines(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def render_output(entries: Iterable[Mapping[str, Any]], max_output_bytes: int) -> str:
    """The output: the kept lines of every log event in the deployer's order (its numbers),
    then one line saying it was cut, if it was."""
    ordered = sorted(entries, key=lambda entry: int(entry["event"]["id"]))
    text = "".join(
        _as_lines(str(entry["event"]["content"]))
        for entry in ordered
        if entry["event"]["type"] == "log" and not entry["event"].get("dropped")
    )
    last = max(ordered, key=entry_slot, default=None)
    if last is not None and last["state"]["cut"]:
        text += cut_line(max_output_bytes)
    return text


@dataclass(frozen=True)
class LoggedEvent:
    """An event as followers are sent it: ``slot``, its place in the log (what SSE calls the
    event's id, and ``Last-Event-ID`` resumes after), and ``shown``, the public JSON."""

    slot: int
    shown: dict[str, Any]
    final: bool


def public_event(entry: Mapping[str, Any], max_output_bytes: int) -> LoggedEvent | None:
    """What a follower is sent for ``entry``; None for a log event that was dropped."""
    stored = entry["event"]
    if stored.get("dropped"):
        return None
    shown: dict[str, Any] = {"id": stored["id"], "type": stored["type"]}
    if stored["type"] == "status":
        shown["status"] = stored["status"]
    else:
        shown["content"] = _as_lines(str(stored["content"]))
        if stored.get("cut"):
            shown["content"] += cut_line(max_output_bytes)
    shown["created_at"] = stored.get("received_at")
    final = stored["type"] == "status" and is_terminal(str(stored["status"]))
    return LoggedEvent(entry_slot(entry), shown, final)


def snapshot(record: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """``record`` showing the state at ``entry``'s slot, or None when it already shows that slot
    or a later one (records are brought forward only, whichever instance writes first)."""
    if int(record.get("log_slot", 0)) >= entry_slot(entry):
        return None
    state = entry["state"]
    updated = dict(record)
    updated["deployment"] = {
        **record["deployment"],
        "status": state["status"],
        "finished_at": state["finished_at"],
    }
    updated["log_slot"] = entry_slot(entry)
    return updated
