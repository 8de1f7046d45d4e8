"""The one retry policy: bounded attempts, exponential backoff, a cap, jitter, and only the
failures a call site names are tried again; and no retry loop written outside it."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.retry import RetryPolicy

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
POLICY_MODULE = "gateway.retry"
# Sleeps that are no wait between attempts: each (module, function) with the reason.
NOT_RETRIES = {
    ("gateway.server.observability.dependencies", "_check_forever"): (
        "the readiness checks, run again every interval whatever they found"
    ),
    ("gateway.server.observability.shared_metrics", "loop"): (
        "a worker publishes its metrics every interval"
    ),
    ("gateway.server.adapters.jwks", "_refresh_forever"): (
        "the OIDC provider's keys, fetched again every refresh interval"
    ),
    ("gateway.server.adapters.deployments.demo_deployer", "run"): (
        "a queue worker's poll loop, which runs until the app stops: a failed poll is polled "
        "again after one poll's wait, no call is given up"
    ),
    ("gateway.server.workers", "_watch"): (
        "the supervisor restarting a crashed worker process, pausing only after a crash soon "
        "after its start (a crash loop)"
    ),
    ("gateway.client.output", "_tick"): "redraws the terminal's waiting line every interval",
    ("gateway.server.http.splice", "_flushed"): (
        "a poll for asyncio's write buffer to empty before a download is spliced, bounded by "
        "server.send_timeout; nothing is attempted again"
    ),
}


def _no_wait() -> RetryPolicy:
    return RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=30.0, random=lambda: 1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay(7) == 30.0
    assert policy.delay(10) == 30.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_jitter_takes_off_at_most_half(draw: float) -> None:
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=8.0, random=lambda: draw)
    for retry in range(1, 6):
        ceiling = policy.ceiling(retry)
        assert ceiling / 2 <= policy.delay(retry) <= ceiling
    assert policy.delay(3) == pytest.approx(4.0 / 2 + 4.0 / 2 * draw)


@pytest.mark.parametrize(("jitter", "draw", "wait"), [(0.0, 0.3, 4.0), (1.0, 0.25, 1.0)])
def test_jitter_is_a_fraction_of_the_wait(jitter: float, draw: float, wait: float) -> None:
    """No jitter: the wait is the ceiling (a wait shown to a person); all of it: from 0 up."""
    policy = RetryPolicy(
        attempts=5, base_delay=1.0, max_delay=8.0, jitter=jitter, random=lambda: draw
    )
    assert policy.delay(3) == pytest.approx(wait)


def test_real_jitter_spreads_the_waits() -> None:
    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=1.0)
    assert len({policy.delay(1) for _ in range(20)}) > 1


async def test_tries_are_bounded_and_wait_between() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.05, random=lambda: 1.0)
    started = time.monotonic()
    seen = [attempt async for attempt in policy.tries()]
    assert seen == [1, 2, 3]
    assert time.monotonic() - started >= 0.1  # two waits of 0.05 s, none before the first


async def test_first_attempt_does_not_wait() -> None:
    policy = RetryPolicy(attempts=2, base_delay=5.0, max_delay=5.0)
    async with asyncio.timeout(1):
        async for attempt in policy.tries():
            assert attempt == 1
            break


@pytest.mark.parametrize(
    ("attempts", "base", "cap", "jitter"),
    [(0, 0.1, 1.0, 0.5), (1, -0.1, 1.0, 0.5), (1, 0.1, -1.0, 0.5), (1, 0.1, 1.0, 1.5)],
)
def test_a_policy_that_makes_no_sense_is_refused(
    attempts: int, base: float, cap: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=attempts, base_delay=base, max_delay=cap, jitter=jitter)


class Flaky(Exception):
    pass


class Broken(Exception):
    pass


async def test_call_tries_a_named_failure_again_until_it_succeeds() -> None:
    seen: list[int] = []

    async def once(attempt: int) -> str:
        seen.append(attempt)
        if attempt < 3:
            raise Flaky()
        return "done"

    assert await _no_wait().call(once, retry_on=(Flaky,)) == "done"
    assert seen == [1, 2, 3]


async def test_call_gives_up_after_its_attempts_with_the_last_failure() -> None:
    seen: list[int] = []

    async def once(attempt: int) -> None:
        seen.append(attempt)
        raise Flaky(attempt)

    with pytest.raises(Flaky) as raised:
        await _no_wait().call(once, retry_on=(Flaky,))
    assert seen == [1, 2, 3, 4]
    assert raised.value.args == (4,)


async def test_call_does_not_try_again_a_failure_it_was_not_told_of() -> None:
    seen: list[int] = []

    async def once(attempt: int) -> None:
        seen.append(attempt)
        raise Broken()

    with pytest.raises(Broken):
        await _no_wait().call(once, retry_on=(Flaky,))
    assert seen == [1]


async def test_call_waits_the_backoff_between_attempts() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=1.0, random=lambda: 1.0)
    times: list[float] = []

    async def once(attempt: int) -> None:
        times.append(time.monotonic())
        raise Flaky()

    with pytest.raises(Flaky):
        await policy.call(once, retry_on=(Flaky,))
    assert times[1] - times[0] >= 0.05
    assert times[2] - times[1] >= 0.1  # doubled


async def test_pause_waits_what_the_other_side_asked_for() -> None:
    policy = RetryPolicy(attempts=2, base_delay=30.0, max_delay=30.0)
    started = time.monotonic()
    async with asyncio.timeout(5):
        await policy.pause(1, 0.05)
    assert time.monotonic() - started >= 0.05


def _sleeps(tree: ast.Module) -> list[tuple[str, int]]:
    """(innermost function, line) of each ``sleep(...)`` call (``asyncio.sleep``,
    ``time.sleep``), at any depth: a wait between attempts may sit in a helper the loop calls
    (``failed()``), not only in the loop itself."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "sleep":
                    found.append((function, child.lineno))
            visit(child, function)

    visit(tree, "<module>")
    return found


def _all_sleeps() -> dict[str, list[tuple[str, int]]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = _sleeps(ast.parse(path.read_text()))
    return found


SLEEPS = _all_sleeps()


@pytest.mark.parametrize("name", sorted(n for n in SLEEPS if n != POLICY_MODULE))
def test_no_retry_loop_outside_the_policy(name: str) -> None:
    """A wait between attempts is a retry loop of its own: build a ``RetryPolicy`` (from
    gateway.retry) at the call site and use its ``call``, ``tries`` or ``pause``; a sleep that
    is no retry (a poll, a keep-alive tick) goes in NOT_RETRIES with its reason."""
    written = [
        f"{name}.{function} line {line}"
        for function, line in SLEEPS[name]
        if (name, function) not in NOT_RETRIES
    ]
    assert not written, f"sleeps outside gateway/retry.py: {written}"


def test_the_scan_sees_sleeps_and_its_exceptions_still_hold() -> None:
    # Guards the guard: the policy's own wait is found, a sleep nested in a loop or in a
    # method is found, and every exception names a function that still sleeps (a stale one
    # would let a new retry loop in under an old name).
    assert [function for function, _ in SLEEPS[POLICY_MODULE]] == ["pause"]
    nested = ast.parse(
        "class A:\n async def f(self):\n  for x in y:\n   if x:\n    await z.sleep(1)\n"
    )
    assert _sleeps(nested) == [("f", 5)]
    assert _sleeps(ast.parse("def f():\n time.sleep(1)\n")) == [("f", 2)]
    assert _sleeps(ast.parse("async def f():\n await asyncio.wait_for(g(), 1)\n")) == []
    for name, function in NOT_RETRIES:
        assert any(f == function for f, _ in SLEEPS.get(name, [])), (name, function)


def test_the_policy_loads_neither_aiohttp_nor_botocore_nor_the_server() -> None:
    """The client imports it, and the client never loads the server."""
    code = (
        "import sys, gateway.retry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'botocore') "
        "or m.startswith('gateway.server')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
