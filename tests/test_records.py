"""The deployment record rules, no I/O: events, statuses, output cap, pagination, SSE framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import BadRequest, ValidationFailed
from gateway.server.domain.records import (
    MAX_EVENT_CONTENT,
    STATUSES,
    TERMINAL_STATUSES,
    Event,
    Page,
    apply_event,
    deployment_view,
    event_output,
    hook_errors,
    is_finished,
    new_record,
    pagination,
    parse_event,
    parse_last_event_id,
    parse_page,
    public_event,
    same_event,
    sse_message,
    stored_event,
)

NOW = "2026-01-01T00:00:00Z"


def record() -> dict[str, Any]:
    return new_record("d-1", "my-app", NOW, "v1", "https://x.example/a.tgz", None, "ci")


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


def test_a_retry_is_the_same_event_and_another_is_not() -> None:
    event = Event(1, "log", content="a")
    stored = stored_event(event, record(), 100, NOW)
    assert same_event(stored, Event(1, "log", content="a"))
    assert not same_event(stored, Event(1, "log", content="b"))
    assert not same_event(stored, Event(1, "status", status="building"))


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


def test_status_events_move_the_record_and_finish_it() -> None:
    current = record()
    building = stored_event(Event(1, "status", status="building"), current, 100, "t1")
    current = apply_event(current, building, fresh=True) or current
    assert current["deployment"]["status"] == "building"
    assert current["deployment"]["finished_at"] is None
    done = stored_event(Event(2, "status", status="build-error"), current, 100, "t2")
    current = apply_event(current, done, fresh=True) or current
    assert current["deployment"]["status"] == "build-error"
    assert current["deployment"]["finished_at"] == "t2"
    assert is_finished(current)


def test_an_older_status_arriving_late_does_not_win() -> None:
    current = record()
    newer = stored_event(Event(3, "status", status="pushing"), current, 100, NOW)
    older = stored_event(Event(2, "status", status="building"), current, 100, NOW)
    current = apply_event(current, newer, fresh=True) or current
    current = apply_event(current, older, fresh=True) or current
    assert current["deployment"]["status"] == "pushing"


def test_a_retry_already_applied_changes_nothing_but_a_lagging_record_catches_up() -> None:
    current = record()
    log_event = stored_event(Event(1, "log", content="abc"), current, 100, NOW)
    current = apply_event(current, log_event, fresh=True) or current
    assert current["output_bytes"] == 3
    assert apply_event(current, log_event, fresh=False) is None
    lagging = record()
    caught_up = apply_event(lagging, log_event, fresh=False)
    assert caught_up is not None and caught_up["output_bytes"] == 3


def test_output_is_cut_at_the_limit_with_one_closing_line() -> None:
    current = record()
    outputs = []
    for number, content in enumerate(["12345", "67890", "abc"], start=1):
        stored = stored_event(Event(number, "log", content=content), current, 8, NOW)
        current = apply_event(current, stored, fresh=True) or current
        outputs.append(event_output(stored, 8))
    text = "".join(outputs)
    assert text.startswith("12345\n678\n")
    assert text.count("output cut") == 1
    assert text.endswith("the rest was not kept]\n")
    assert "abc" not in text
    assert current["output_cut"] is True


def test_cut_never_splits_a_character() -> None:
    stored = stored_event(Event(1, "log", content="aé"), record(), 2, NOW)
    assert stored["content"] == "a"
    assert stored["cut"] is True


def test_dropped_events_are_not_shown_to_followers() -> None:
    current = record()
    current["output_cut"] = True
    stored = stored_event(Event(9, "log", content="late"), current, 8, NOW)
    assert public_event(stored, 8) is None
    assert event_output(stored, 8) == ""


def test_sse_message_framing() -> None:
    shown = public_event(stored_event(Event(7, "status", status="success"), record(), 8, NOW), 8)
    assert shown is not None
    raw = sse_message(shown).decode()
    lines = raw.split("\n")
    assert lines[0] == "id: 7"
    assert lines[1] == "event: status"
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "id": 7,
        "type": "status",
        "status": "success",
        "created_at": NOW,
    }
    assert raw.endswith("\n\n")


def test_multi_line_log_stays_one_data_line() -> None:
    shown = public_event(stored_event(Event(1, "log", content="a\nb"), record(), 99, NOW), 99)
    assert shown is not None
    assert sse_message(shown).decode().count("\n") == 4  # id, event, data, blank line


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
    assert "output_bytes" not in view


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
