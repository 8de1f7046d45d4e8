"""The deployment record and event-log rules, no I/O: events, statuses, output cap, pagination,
SSE framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import BadRequest, EventConflict, TooManyEvents, ValidationFailed
from gateway.server.domain.deployments.event_log import (
    MAX_EVENTS,
    cut_line,
    initial_state,
    next_entry,
    public_event,
    render_output,
    snapshot,
)
from gateway.server.domain.deployments.log_heads import LogHeads
from gateway.server.domain.deployments.records import (
    MAX_EVENT_CONTENT,
    STATUSES,
    TERMINAL_STATUSES,
    Event,
    Page,
    deployment_view,
    hook_errors,
    is_finished,
    new_record,
    pagination,
    parse_event,
    parse_last_event_id,
    parse_page,
    sse_message,
)

NOW = "2026-01-01T00:00:00Z"


def record() -> dict[str, Any]:
    return new_record("d-1", "my-app", NOW, "v1", "https://x.example/a.tgz", None, "ci")


def status(number: int, value: str) -> Event:
    return Event(number, "status", status=value)


def log_event(number: int, content: str) -> Event:
    return Event(number, "log", content=content)


def test_vocabulary_is_the_platforms() -> None:
    assert STATUSES[0] == "queued"
    terminal = {"success", "aborted", "build-error", "crashed-error", "timeout-error", "hook-error"}
    assert set(TERMINAL_STATUSES) == terminal
    assert not TERMINAL_STATUSES & {"queued", "building", "pushing", "starting"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": 1, "type": "status", "status": "building"}, Event(1, "status", status="building")),
        ({"id": 2, "type": "log", "content": "hi"}, Event(2, "log", content="hi")),
        ({"id": 3, "type": "log", "content": ""}, Event(3, "log", content="")),
        ({"id": 4, "type": "log", "content": "x", "extra": 1}, Event(4, "log", content="x")),
    ],
)
def test_parse_event_accepts(data: dict[str, Any], expected: Event) -> None:
    assert parse_event(data) == expected


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"type": "status", "status": "building"}, {"id"}),
        ({"id": 0, "type": "status", "status": "building"}, {"id"}),
        ({"id": "1", "type": "status", "status": "building"}, {"id"}),
        ({"id": True, "type": "status", "status": "building"}, {"id"}),
        ({"id": 10**10, "type": "status", "status": "building"}, {"id"}),
        ({"id": 1, "type": "status", "status": "done"}, {"status"}),
        ({"id": 1, "type": "status"}, {"status"}),
        ({"id": 1, "type": "progress"}, {"type"}),
        ({"id": 1}, {"type"}),
        ({"id": 1, "type": "log"}, {"content"}),
        ({"id": 1, "type": "log", "content": 5}, {"content"}),
        ({"id": 1, "type": "log", "content": "x" * (MAX_EVENT_CONTENT + 1)}, {"content"}),
        ({"id": 1, "type": "log", "content": "\ud800"}, {"content"}),
        ({"id": -1, "type": "nope"}, {"id", "type"}),
    ],
)
def test_parse_event_refuses_naming_fields(data: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_event(data)
    assert set(caught.value.errors) == fields


def test_content_limit_counts_utf8_bytes() -> None:
    fits = "é" * (MAX_EVENT_CONTENT // 2)
    assert parse_event({"id": 1, "type": "log", "content": fits}).content == fits
    with pytest.raises(ValidationFailed):
        parse_event({"id": 1, "type": "log", "content": fits + "é"})


@pytest.mark.parametrize(
    ("hook", "ok"),
    [
        (None, True),
        ("bundle exec rake db:migrate", True),
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("a\nb", False),
        ("a\x00", False),
        (5, False),
    ],
)
def test_hook_rules(hook: Any, ok: bool) -> None:
    assert (hook_errors(hook) == []) is ok


def chain(events: list[Event], max_output: int = 100) -> list[dict[str, Any]]:
    """The log entries of ``events`` taken in this order."""
    entries: list[dict[str, Any]] = []
    for event in events:
        entries.append(next_entry(entries[-1] if entries else None, event, NOW, max_output))
    return entries


def test_status_events_move_the_state_and_finish_it() -> None:
    building, done = chain([status(1, "building"), status(2, "build-error")])
    assert (building["slot"], done["slot"]) == (1, 2)
    assert building["state"]["status"] == "building"
    assert building["state"]["finished_at"] is None
    assert done["state"]["status"] == "build-error"
    assert done["state"]["finished_at"] == NOW
    current = snapshot(record(), done)
    assert current is not None and is_finished(current)
    assert current["log_slot"] == 2
    assert snapshot(current, building) is None  # records are only brought forward


def test_an_older_status_arriving_late_does_not_win() -> None:
    *_, last = chain([status(3, "pushing"), status(2, "building")])
    assert last["state"]["status"] == "pushing"


def test_a_final_status_ends_the_deployment_whatever_its_number() -> None:
    _, success = chain([status(10, "building"), status(5, "success")])
    assert success["state"]["status"] == "success"
    assert success["state"]["finished_at"] == NOW
    for late in (status(12, "pushing"), log_event(3, "x"), status(20, "success")):
        with pytest.raises(EventConflict):
            next_entry(success, late, NOW, 100)


def test_the_last_slot_is_kept_for_a_final_status() -> None:
    full = {"slot": MAX_EVENTS - 1, "event": {}, "state": initial_state()}
    with pytest.raises(TooManyEvents) as caught:
        next_entry(full, log_event(MAX_EVENTS, "more"), NOW, 100)
    assert caught.value.status == 413 and caught.value.code == "too_many_events"
    with pytest.raises(TooManyEvents):
        next_entry(full, status(MAX_EVENTS, "building"), NOW, 100)
    last = next_entry(full, status(MAX_EVENTS, "timeout-error"), NOW, 100)
    assert last["slot"] == MAX_EVENTS and last["state"]["status"] == "timeout-error"


def test_output_is_cut_at_the_limit_with_one_closing_line() -> None:
    entries = chain([log_event(n, c) for n, c in enumerate(["12345", "67890", "abc"], 1)], 8)
    text = render_output(entries, 8)
    assert text == "12345\n678\n" + cut_line(8)
    assert entries[-1]["state"]["kept_bytes"] == 8
    assert entries[-1]["state"]["received_bytes"] == 13
    assert entries[-1]["state"]["cut"] is True


def test_output_is_in_the_deployers_order_whatever_the_arrival() -> None:
    entries = chain([log_event(3, "c"), log_event(1, "a"), status(4, "success")])
    assert render_output(entries, 100) == "a\nc\n"
    # Followers get them in the order they were taken: the slot is the SSE id.
    shown = [public_event(entry, 100) for entry in entries]
    assert [(e.slot, e.shown["id"]) for e in shown if e] == [(1, 3), (2, 1), (3, 4)]


def test_cut_never_splits_a_character() -> None:
    (entry,) = chain([log_event(1, "aé")], 2)
    assert entry["event"]["content"] == "a"
    assert entry["event"]["cut"] is True


def test_dropped_events_are_not_shown_to_followers() -> None:
    *_, dropped = chain([log_event(1, "123456789"), log_event(2, "late")], 8)
    assert dropped["event"]["dropped"] is True and dropped["event"]["content"] == ""
    assert public_event(dropped, 8) is None


def test_sse_message_framing() -> None:
    (entry,) = chain([status(7, "success")])
    shown = public_event(entry, 8)
    assert shown is not None and shown.final
    raw = sse_message(shown.slot, shown.shown).decode()
    lines = raw.split("\n")
    assert lines[0] == "id: 1"
    assert lines[1] == "event: status"
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "id": 7,
        "type": "status",
        "status": "success",
        "created_at": NOW,
    }
    assert raw.endswith("\n\n")


def test_multi_line_log_stays_one_data_line() -> None:
    (entry,) = chain([log_event(1, "a\nb")])
    shown = public_event(entry, 99)
    assert shown is not None and not shown.final
    assert sse_message(shown.slot, shown.shown).decode().count("\n") == 4  # id, event, data, blank


@pytest.mark.parametrize(
    ("header", "after"),
    [
        (None, 0),
        ("", 0),
        ("5", 5),
        (" 12 ", 12),
        ("abc", 0),
        ("-1", 0),
        ("9" * 30, 0),
        ("\u00b2", 0),  # a superscript two: isdigit() says yes, int() cannot read it
        ("\uff11", 0),  # a fullwidth one
    ],
)
def test_last_event_id(header: str | None, after: int) -> None:
    assert parse_last_event_id(header) == after


def test_view_adds_the_output_link() -> None:
    view = deployment_view(record(), "https://gw/v1/apps/my-app/deployments/d-1/output")
    assert view["links"] == {"output": "https://gw/v1/apps/my-app/deployments/d-1/output"}
    assert view["status"] == "queued"
    assert view["pusher"] == {"id": "ci", "username": "ci", "email": "", "name": "ci"}
    assert "log_slot" not in view


@pytest.mark.parametrize(
    ("query", "page"),
    [
        ({}, Page(1, 30)),
        ({"page": "2", "per_page": "10"}, Page(2, 10)),
        ({"per_page": "1000"}, Page(1, 100)),
        ({"page": ""}, Page(1, 30)),
        ({"page": "007"}, Page(7, 30)),
        # More digits than int() reads by default: past the end all the same.
        ({"page": "9" * 5000, "per_page": "9" * 5000}, Page(10**9, 100)),
    ],
)
def test_parse_page(query: dict[str, str], page: Page) -> None:
    assert parse_page(query) == page


@pytest.mark.parametrize(
    "query",
    [
        {"page": "0"},
        {"page": "000"},
        {"page": "x"},
        {"per_page": "-3"},
        {"per_page": "0"},
        {"page": "1.5"},
        {"page": "\u00b2"},
        {"per_page": "\u00b2"},
        {"page": "\uff11"},
    ],
)
def test_parse_page_refuses(query: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        parse_page(query)


@pytest.mark.parametrize(
    ("page", "total", "expected"),
    [
        (Page(1, 30), 0, (None, None, 0)),
        (Page(1, 30), 30, (None, None, 1)),
        (Page(1, 30), 31, (None, 2, 2)),
        (Page(2, 30), 31, (1, None, 2)),
        (Page(2, 10), 35, (1, 3, 4)),
    ],
)
def test_pagination_meta(page: Page, total: int, expected: tuple[Any, Any, int]) -> None:
    meta = pagination(page, total)
    assert (meta["prev_page"], meta["next_page"], meta["total_pages"]) == expected
    assert meta["current_page"] == page.number
    assert meta["total_count"] == total
    assert (page.start, page.stop) == (
        (page.number - 1) * page.per_page,
        page.number * page.per_page,
    )


def test_log_heads_know_the_numbers_before_the_head_only_without_a_gap() -> None:
    heads = LogHeads()
    key = ("my-app", "d-1")
    entries = chain([log_event(n, "x") for n in (4, 2, 9, 1)])
    assert heads.numbers_after(key, 0) is None
    heads.remember(key, entries[:2])
    assert heads.numbers_after(key, 0) == [4, 2]
    assert heads.numbers_after(key, 1) == [2]
    heads.remember(key, [entries[3]])  # slot 4 without slot 3: a gap
    assert heads.get(key) == entries[3]
    assert heads.numbers_after(key, 2) is None
    assert heads.numbers_after(key, 3) == [1]
    heads.remember(key, entries[:3])  # older entries change nothing
    assert heads.get(key) == entries[3]
