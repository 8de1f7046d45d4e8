"""Running a client command: its settings (API URL, token, app), its event loop, its one-line
failures and their exit codes (docs/cli.md, "Exit codes").

A failure is one line, ``gateway: error: <what failed>: <cause>``, sometimes followed by what to do
next (indented lines), and a non-zero exit: ``EXIT_FAILURE`` for what failed on the way,
``EXIT_USAGE`` for a usage problem, ``EXIT_FOLLOW_LOST`` when following gave up (the deployment
may still be running), ``EXIT_INTERRUPTED`` on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from gateway.client.cli import API_URL_ENV, APP_ENV, TOKEN_ENV
from gateway.client.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, Interrupted
from gateway.client.output import Reporter
from gateway.ids import APP_NAME, APP_NAME_RULE
from gateway.redaction import MASK, redact


def api_settings(args: argparse.Namespace) -> tuple[str, str]:
    """The API URL and token from the options, else the environment; a usage error if missing."""
    api_url = (args.api_url or os.environ.get(API_URL_ENV) or "").strip()
    token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
    if not api_url:
        raise CliError(f"no API URL: pass --api-url URL or set {API_URL_ENV}", exit_code=EXIT_USAGE)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"the API URL must be an absolute http(s) URL, not {api_url!r}", exit_code=EXIT_USAGE
        )
    if not token:
        raise CliError(f"no API token: pass --token TOKEN or set {TOKEN_ENV}", exit_code=EXIT_USAGE)
    return api_url, token


def app_of(args: argparse.Namespace) -> str:
    """The app from ``--app``, else ``GATEWAY_APP``, checked against the platform's rule."""
    app = (args.app or os.environ.get(APP_ENV) or "").strip()
    if not app:
        raise CliError(f"no app: pass --app APP or set {APP_ENV}", exit_code=EXIT_USAGE)
    if not APP_NAME.fullmatch(app):
        raise CliError(f"app name {app!r} {APP_NAME_RULE}", exit_code=EXIT_USAGE)
    return app


def reporter_of(args: argparse.Namespace) -> Reporter:
    return Reporter(quiet=args.quiet, verbose=args.verbose)


async def _interruptible(command: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Await ``command``; Ctrl-C (SIGINT) cancels it and raises ``KeyboardInterrupt`` once it has
    cleaned up (a partial download removed, connections closed).

    ``asyncio.run`` handles SIGINT with a plain signal handler, which runs only when the main
    thread next wakes: when the kernel hands the signal to another thread (a worker writing the
    download, tqdm's monitor) while the loop waits on a stalled connection, nothing would happen
    until the server spoke again. The loop's own handler also wakes the loop, whichever thread
    the signal lands on."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None or threading.current_thread() is not threading.main_thread():
        await command()  # signals reach the main thread's loop only (in tests, a thread runs us)
        return
    interrupted = False

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()
        # A second Ctrl-C while cleaning up stops at once (Python's default handler is back).
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        await command()
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:
            raise KeyboardInterrupt from None
        raise
    finally:
        if not interrupted:
            loop.remove_signal_handler(signal.SIGINT)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, command: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``command`` in a fresh event loop; a failure prints its line and gives its exit code.

    No token is printed: the API token is masked everywhere, and URL tokens in the error line;
    a ``CliError``'s ``hint`` may hold the one URL the user needs again (its own token)."""
    secrets = tuple(s for s in (getattr(args, "token", None), os.environ.get(TOKEN_ENV)) if s)
    try:
        asyncio.run(_interruptible(command))
    except Interrupted as exc:
        _say(f"gateway: {exc.message}")
        return exc.exit_code
    except CliError as exc:
        _say(f"gateway: error: {redact(exc.message, secrets)}")
        for line in exc.hint:
            for secret in secrets:
                line = line.replace(secret, MASK)
            _say(f"  {line}")
        return exc.exit_code
    except OSError as exc:
        # A local failure nobody turned into a CliError (disk full while packing, say).
        where = f" ({exc.filename})" if exc.filename else ""
        _say(f"gateway: error: {redact(f'{exc.strerror or exc}{where}', secrets)}")
        return 1
    except KeyboardInterrupt:
        _say("gateway: interrupted")
        return EXIT_INTERRUPTED
    return 0
