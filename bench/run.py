"""Run every ``bench/bench_*.py`` and rewrite ``BENCHMARKS.md`` with what they print.

Each script measures on its own (local servers only, bounded in time) and prints one or more
Markdown sections to stdout. ``BENCHMARKS.md`` is: a header (when, which commit, the machine),
``bench/notes.md`` (how to read the figures, the targets, the profiles; written by hand), then every
script's sections in name order. A script that fails leaves a section saying so, and ``run.py``
exits non-zero after writing the rest.

    python bench/run.py            # everything, as `make bench` does
    python bench/run.py transfer   # only scripts whose name has "transfer", to stdout
    python bench/run.py --notes    # put the current bench/notes.md into BENCHMARKS.md, no runs
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUTPUT = ROOT / "BENCHMARKS.md"
# Per script; the whole of `make bench` is meant to stay under ten minutes on 2 cores.
SCRIPT_TIMEOUT = 900


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def run(script: Path) -> tuple[str, bool, float]:
    started = time.monotonic()
    print(f"bench: {script.name} ...", file=sys.stderr, flush=True)
    try:
        result = subprocess.run(
            [sys.executable, str(script.relative_to(ROOT))],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - started
        return f"### {script.name}\n\nstopped after {SCRIPT_TIMEOUT} s.\n", False, seconds
    seconds = time.monotonic() - started
    print(f"bench: {script.name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    if result.returncode != 0:
        text = f"### {script.name}\n\nfailed (exit {result.returncode}); see its stderr.\n"
        return text, False, seconds
    return result.stdout.strip() + "\n", True, seconds


def replace_notes() -> int:
    """Swap the notes part of an existing BENCHMARKS.md for bench/notes.md; figures stay."""
    text = OUTPUT.read_text("utf-8")
    head_end = text.index("\n", text.index("Do not edit by hand")) + 1
    figures = text.index("\n## Figures\n")
    notes = (BENCH / "notes.md").read_text(encoding="utf-8").strip()
    OUTPUT.write_text(text[:head_end] + "\n" + notes + "\n" + text[figures:], "utf-8")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--notes"]:
        return replace_notes()
    scripts = sorted(BENCH.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(word in s.name for word in argv)]
    started = time.monotonic()
    sections, ok = [], True
    timings = []
    for script in scripts:
        text, good, seconds = run(script)
        sections.append(text)
        timings.append(f"`{script.name}` {seconds:.0f} s")
        ok = ok and good
    total = time.monotonic() - started
    if argv:  # a partial run does not replace the whole file
        print("\n".join(sections))
        return 0 if ok else 1
    notes = (BENCH / "notes.md").read_text(encoding="utf-8").strip()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        "# Benchmarks\n\n"
        f"Written by `make bench` (`python bench/run.py`) on {now} at commit `{commit()}`, "
        f"in {total / 60:.1f} minutes ({', '.join(timings)}). Do not edit by hand: change "
        "`bench/notes.md` or the scripts in `bench/` and run `make bench` again.\n"
    )
    OUTPUT.write_text("\n".join([head, notes, "", "## Figures", "", *sections]), "utf-8")
    print(f"bench: wrote {OUTPUT.relative_to(ROOT)} in {total:.0f} s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
