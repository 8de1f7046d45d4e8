"""The CLI's failures: one line naming the cause, safe to print (never a token; URLs lose their
query string), and the process's exit code."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from gateway.error_codes import CODES, Code

# The most of an error answer we read: platform error bodies are a few hundred bytes.
MAX_ERROR_BODY = 64 * 1024
# A server message is quoted in our one line; longer ones are cut.
MAX_MESSAGE = 300
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Following gave up (the stream kept breaking): the deployment may well still be running.
EXIT_FOLLOW_LOST = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report to the user as one line, and the process's exit code.

    ``hint``: lines printed under it saying what to do next; unlike the message they keep URL
    tokens (the command that deploys an uploaded archive needs its URL whole)."""

    def __init__(
        self, message: str, *, exit_code: int = EXIT_FAILURE, hint: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class Interrupted(CliError):
    """Ctrl-C, with the one line to print instead of ``interrupted`` (how to pick up again)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_INTERRUPTED)


def safe_url(url: str) -> str:
    """``url`` without its query string and fragment (which may carry a token), for messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _cite(code: Code) -> str:
    """``403 token_expired``: the status and code as the server's table pairs them."""
    return f"{CODES[code].status} {code}"


def describe_error(status: int, body: Any, *, what: str) -> str:
    """The cause of an error answer, in words a user acts on (``what``: the URL's kind)."""
    message = ""
    code = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = body["error"]
        if isinstance(body.get("code"), str):
            code = body["code"]
    detail = f": {_one_line(message)}" if message else ""
    if status == 401:
        return f"the API token was refused (401{detail}); check --token or GATEWAY_TOKEN"
    if status == 403 and code == Code.TOKEN_EXPIRED:
        return (
            f"the {what} has expired ({_cite(Code.TOKEN_EXPIRED)}); create a new source and"
            " start again"
        )
    if status == 403 and code == Code.TOKEN_INVALID:
        return (
            f"the {what} is not valid ({_cite(Code.TOKEN_INVALID)}): its token is damaged or is"
            " not for this operation; copy the whole URL, its token included"
        )
    if status == 403:
        return f"forbidden (403{detail})"
    if status == 404:
        resource = body.get("resource") if isinstance(body, dict) else None
        if resource == "source":
            return "not found (404): nothing has been uploaded to this source yet"
        if resource == "route" and what != "URL":
            return f"no such endpoint (404): the {what} is not a source URL of this gateway"
        if resource == "route":
            return (
                "no such endpoint (404): check --api-url or GATEWAY_API_URL (the gateway's base"
                " URL, without /v1)"
            )
        return f"{resource} not found (404)" if resource else f"not found (404{detail})"
    if status == 413:
        return f"the archive is too large (413{detail})"
    if status == 422 and code == Code.ARCHIVE_INVALID:
        return f"the gateway refused the archive ({_cite(Code.ARCHIVE_INVALID)}{detail})"
    if status == 422:
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, dict) and errors:
            fields = "; ".join(
                f"{field}: {', '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                for field, msgs in errors.items()
            )
            return f"validation failed (422): {_one_line(fields)}"
        return f"validation failed (422{detail})"
    if status >= 500:
        return f"server error ({status}{detail})"
    return f"unexpected answer ({status}{detail})"


async def error_from(resp: aiohttp.ClientResponse, action: str, *, what: str) -> CliError:
    raw = await resp.content.read(MAX_ERROR_BODY)
    body: Any
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None  # a proxy's HTML page, say: the status alone says more in one line
    request_id = resp.headers.get("X-Request-ID")
    suffix = f" [request id {request_id}]" if request_id else ""
    return CliError(f"{action} failed: {describe_error(resp.status, body, what=what)}{suffix}")


@contextlib.contextmanager
def network_errors(action: str, url: str) -> Iterator[None]:
    """Turn aiohttp's and the OS's connection failures into a ``CliError`` naming the host."""
    where = safe_url(url)
    try:
        yield
    except CliError:
        raise
    except aiohttp.ClientConnectorCertificateError:
        raise CliError(f"{action} failed: the TLS certificate of {where} was refused") from None
    except aiohttp.ClientConnectorError as exc:
        host = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, socket.gaierror):
            cause = f"cannot resolve the host name {exc.host}"
        elif exc.os_error.errno == errno.ECONNREFUSED:
            cause = f"connection refused by {host}; is the gateway running at {where}?"
        else:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            cause = f"cannot connect to {host} ({reason})"
        raise CliError(f"{action} failed: {cause}") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise CliError(f"{action} failed: {where} did not answer in time") from None
    except aiohttp.ClientPayloadError:
        raise CliError(
            f"{action} failed: the connection broke before the end of the data"
        ) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        raise CliError(f"{action} failed: the connection to {where} was lost") from None
    except aiohttp.InvalidURL:
        raise CliError(f"{action} failed: not a valid URL: {where}", exit_code=EXIT_USAGE) from None
    except aiohttp.ClientError as exc:
        raise CliError(f"{action} failed: {type(exc).__name__}") from None
