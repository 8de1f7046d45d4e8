"""Log set-up: JSON lines, and one redaction filter on the handler that every record passes."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from gateway.redaction import MASK, redact


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra`` fields."""

    RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
    # Built once: json.dumps with any option builds a new encoder for every line.
    _ENCODER = json.JSONEncoder(default=str)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        reserved = self.RESERVED
        for key, value in record.__dict__.items():
            if key not in reserved and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return self._ENCODER.encode(entry)


class RedactSecrets(logging.Filter):
    """Masks tokens and signatures in every record's message and traceback, whatever logged it:
    labelled ones by their form (``redact``), and each of ``secrets`` (the configuration's, see
    ``Config.secrets``) wherever it stands, even alone."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # One pattern, longest first: a secret inside another is never left half masked.
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def _clean(self, text: str) -> str:
        text = redact(text)
        return self._known.sub(MASK, text) if self._known else text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


class UnparsableRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a malformed request line or header) at error
    level with its parser's traceback. That is the client's mistake, not the server's: it is
    logged once, as a warning of one line saying what was wrong, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        what = " ".join(str(error.message).split())  # the parser's message spans lines
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg = "unparsable request from %s: %s %s"
        record.args = (remote, error.code, what)
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class WorkerField(logging.Filter):
    """Names the worker process (``server.workers``) in every record: ``worker`` in JSON."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(
    level: str, as_json: bool, worker: int | None = None, secrets: Iterable[str] = ()
) -> None:
    """Log lines to standard error, ``secrets`` masked wherever they appear; ``worker``, in a
    worker process, is named in each line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets(secrets))
    if worker is not None:
        handler.addFilter(WorkerField(worker))
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        name = "%(name)s[%(worker)s]" if worker is not None else "%(name)s"
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {name} %(message)s"))
    # No log line says where in the source it was made or from which thread or process: not
    # gathering that spares a walk up the stack for every line (logging's documented switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log prints the query string (the token): ours replaces it.
    logging.getLogger("aiohttp.access").disabled = True
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, UnparsableRequests) for f in server_log.filters):
        server_log.addFilter(UnparsableRequests())
    for noisy in ("botocore", "aiobotocore", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
