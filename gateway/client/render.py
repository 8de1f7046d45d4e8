"""The CLI's results for a person at a terminal: a deployment's summary, the deployments table.

Scripts get the API's JSON instead (``--json``, the default when stdout is not a terminal). What
is shown here never carries a URL with a token: the summary names the command that reads the
output, not the deployment's links.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime
from typing import Any

# Columns of `gateway deployments list` on a terminal, and the longest cell shown in full.
TABLE_COLUMNS = ("ID", "STATUS", "GIT_REF", "PUSHER", "CREATED", "DURATION")
MAX_CELL = 40


def wants_json(args: Any) -> bool:
    """JSON when asked (``--json``), or when stdout is not a terminal (a script reads it)."""
    return bool(getattr(args, "json", False)) or not sys.stdout.isatty()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2), flush=True)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def duration_of(deployment: dict[str, Any]) -> str:
    """How long it ran: the API's ``duration`` (seconds) when given, else from its two times."""
    duration = deployment.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        return format_duration(duration)
    created = _parse_time(deployment.get("created_at"))
    finished = _parse_time(deployment.get("finished_at"))
    if created is None or finished is None:
        return "-"
    return format_duration((finished - created).total_seconds())


def _pusher(deployment: dict[str, Any]) -> str:
    pusher = deployment.get("pusher")
    if isinstance(pusher, dict):
        for key in ("username", "name", "email", "id"):
            if isinstance(pusher.get(key), str) and pusher[key]:
                return str(pusher[key])
    return "-"


def output_command(app: str, deployment_id: str) -> str:
    return shlex.join(["gateway", "deployments", "output", "--app", app, deployment_id])


def deployment_summary(answer: dict[str, Any], app: str) -> str:
    """A few lines on one deployment (``{"deployment": {...}}``): id, status, duration, git_ref,
    and the command that prints its output."""
    deployment = answer.get("deployment")
    if not isinstance(deployment, dict):
        deployment = answer
    deployment_id = str(deployment.get("id", "?"))
    status = str(deployment.get("status", "?"))
    lines = [f"deployment {deployment_id} of {app}: {status}"]
    details = [f"duration {duration_of(deployment)}"]
    if isinstance(deployment.get("git_ref"), str):
        details.append(f"git_ref {deployment['git_ref']}")
    if isinstance(deployment.get("created_at"), str):
        details.append(f"created {deployment['created_at']}")
    lines.append("  " + ", ".join(details))
    lines.append(f"  output: {output_command(app, deployment_id)}")
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"


def deployments_table(body: dict[str, Any]) -> str:
    """``GET .../deployments`` as aligned columns, newest first, with the page under it."""
    items = body.get("deployments")
    deployments = [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []
    if not deployments:
        return "no deployments\n"
    rows = [TABLE_COLUMNS]
    for d in deployments:
        git_ref = d.get("git_ref")
        rows.append(
            (
                _cell(str(d.get("id", "?"))),
                _cell(str(d.get("status", "?"))),
                _cell(git_ref) if isinstance(git_ref, str) and git_ref else "-",
                _cell(_pusher(d)),
                _cell(str(d.get("created_at") or "-")),
                duration_of(d),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    text = "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
    return text + _page_line(body)


def _page_line(body: dict[str, Any]) -> str:
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    if not isinstance(pagination, dict):
        return ""
    page, pages = pagination.get("current_page"), pagination.get("total_pages")
    total = pagination.get("total_count")
    if not all(isinstance(v, int) for v in (page, pages, total)):
        return ""
    more = f"; next: --page {pagination.get('next_page')}" if pagination.get("next_page") else ""
    return f"page {page} of {pages} ({total} deployments){more}\n"
