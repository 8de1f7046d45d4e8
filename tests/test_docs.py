"""The documentation names real things.

README.md and docs/*.md are checked against the repository: every key of config.example.yaml is
documented in docs/configuration.md with the default the code has, and every key documented there
exists; every `make X` names a Makefile target; every `gateway ...` command names real sub-commands,
choices and options of the CLI parser; every repository path and relative link (with its #anchor)
points at something that exists.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.__main__ import build_parser
from gateway.config import Config, load_config
from gateway.server.adapters.embedded import embedded_services
from gateway.server.app import create_app

from .ports import free_port
from .terminal import GATEWAY, on_terminal

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A command at the start of a line or code span: an optional prompt and VAR=value prefixes.
COMMAND = re.compile(
    r"^(?:\$ )?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
    r"(?P<prog>make|(?:\.venv/bin/)?gateway)(?:\s+(?P<args>.*))?$"
)
REPO_PATH = re.compile(r"^(?:gateway|tests|bench|deploy|docs|\.ci)/[\w./-]*$")
SHELL_STOP = {">", ">>", "<", "|", "||", "&&", ";", "#", "2>&1"}


# --- what the pages say -------------------------------------------------------------------------


def split_code(text: str) -> tuple[list[str], list[str], str]:
    """The lines of fenced blocks, the inline code spans, and the prose without the fences."""
    fenced = [line for block in FENCE.findall(text) for line in block.splitlines()]
    prose = FENCE.sub("", text)
    return fenced, CODE_SPAN.findall(prose), prose


def commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(program, argument words) of each `make`/`gateway` command a page shows."""
    fenced, spans, _ = split_code(text)
    for line in [line.strip() for line in fenced] + [span.strip() for span in spans]:
        match = COMMAND.match(line)
        if match:
            words = (match.group("args") or "").split()
            stop = next((i for i, w in enumerate(words) if w in SHELL_STOP), len(words))
            yield match.group("prog").rsplit("/", 1)[-1], words[:stop]


def repo_paths(text: str) -> Iterator[str]:
    fenced, spans, _ = split_code(text)
    for chunk in fenced + spans:
        for word in chunk.split():
            word = word.strip("\"'(),;:")
            if REPO_PATH.match(word):
                yield word


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    _, _, prose = split_code(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


# --- what the repository has --------------------------------------------------------------------


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    variables = dict(re.findall(r"^([A-Z_]+)\s*[:?]?=\s*(.*?)\s*$", text, re.M))

    def expand(word: str) -> str:
        for _ in range(5):
            word = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), word)
        return word

    targets: set[str] = set()
    for names in re.findall(r"^([^\s#:=][^:=]*?)\s*:(?!=)", text, re.M):
        targets.update(expand(name) for name in names.split())
    return targets


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_problem(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """What is wrong with `gateway WORDS`: an unknown sub-command, choice or option; else None."""
    choices = [a for a in parser._actions if a.choices and a.option_strings == []]
    for word in words:
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            if option not in parser._option_string_actions:
                return f"no option {option} in `{parser.prog}`"
            continue
        if word.isupper() or not re.fullmatch(r"[a-z][a-z|-]*", word):
            continue  # a placeholder (FILE, URL), a value or a path
        children = subparsers(parser)
        if children:
            missing = [name for name in word.split("|") if name not in children]
            if missing:
                return f"no sub-command {missing[0]!r} in `{parser.prog}`"
            if "|" in word:
                return None  # alternatives: their options are not followed
            parser = children[word]
            choices = [a for a in parser._actions if a.choices and a.option_strings == []]
        elif choices:
            allowed = set(typing.cast(Any, choices.pop(0).choices))
            if not set(word.split("|")) <= allowed:
                return f"{word!r} is not one of {sorted(allowed)} in `{parser.prog}`"
    return None


def config_key_paths(data: Any, prefix: str = "") -> Iterator[str]:
    """Every key path of a YAML document that holds a value (not a section): `a.b`, `a.list[].c`."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if not isinstance(value, dict):
                yield path
            yield from config_key_paths(value, path)
    elif isinstance(data, list):
        for item in data:
            yield from config_key_paths(item, f"{prefix}[]")


def code_default(path: str) -> Any:
    """The default the code gives the key at ``path``, or ``"required"`` when it has none."""
    cls: Any = Config
    field = None
    for name in path.replace("[]", "").split("."):
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        hint = typing.get_type_hints(cls)[name]
        cls = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
    assert field is not None
    if field.default is not dataclasses.MISSING:
        return "required" if field.default == "" else field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return "required"


def documented_keys() -> dict[str, str]:
    """Key path -> its default cell, from the tables of docs/configuration.md."""
    rows = re.findall(r"^\| `([\w.\[\]]+)` \| ([^|]*) \|", CONFIGURATION.read_text("utf-8"), re.M)
    return dict(rows)


def as_value(cell: str) -> Any:
    """A documented default as a value: `required`, or the YAML in the cell's first code span."""
    if cell.strip().startswith("required"):
        return "required"
    spans = CODE_SPAN.findall(cell)
    assert spans, f"no default in {cell!r}"
    value = yaml.safe_load(spans[0])
    return tuple(value) if isinstance(value, list) else value


# --- the checks ---------------------------------------------------------------------------------


def test_every_example_key_is_documented_with_the_code_default() -> None:
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    documented = documented_keys()
    problems = []
    for path in config_key_paths(example):
        if path not in documented:
            problems.append(f"{path}: not in docs/configuration.md")
        elif as_value(documented[path]) != code_default(path):
            problems.append(
                f"{path}: documented default {documented[path].strip()!r},"
                f" the code's is {code_default(path)!r}"
            )
    assert not problems, "\n".join(problems)


def test_every_documented_key_is_in_the_example() -> None:
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    stale = set(documented_keys()) - set(config_key_paths(example))
    assert not stale, f"documented in docs/configuration.md, not in config.example.yaml: {stale}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_commands_name_real_targets_and_sub_commands(page: Path) -> None:
    targets, parser = make_targets(), build_parser()
    problems = []
    for prog, words in commands(page.read_text(encoding="utf-8")):
        shown = " ".join([prog, *words])
        if prog == "make":
            for word in words:
                if "=" not in word and not word.startswith("-") and word not in targets:
                    problems.append(f"`{shown}`: no target {word!r} in the Makefile")
        else:
            problem = command_problem(parser, words)
            if problem:
                problems.append(f"`{shown}`: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_and_links_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems = [f"{path}: no such file" for path in repo_paths(text) if not (ROOT / path).exists()]
    for target in LINK.findall(split_code(text)[2]):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not the repository's
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.is_relative_to(ROOT):
            problems.append(f"({target}): outside the repository")
        elif not linked.exists():
            problems.append(f"({target}): no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"({target}): no heading #{anchor} in {linked.name}")
    assert not problems, "\n".join(problems)


# The repository stands on its own: its pages never send readers to files it does not hold.
OUTSIDE = re.compile(r"SPEC\.md|\.\./shared|shared folder", re.I)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_name_nothing_outside_the_repository(page: Path) -> None:
    found = OUTSIDE.findall(page.read_text(encoding="utf-8"))
    assert not found, f"{page.name} points outside the repository: {found}"


def test_the_checks_see_what_the_pages_show() -> None:
    """The extraction finds the README's commands: an empty scan would pass anything."""
    shown = {(prog, words[0]) for prog, words in commands(README.read_text("utf-8")) if words}
    assert {("make", "run"), ("make", "test"), ("gateway", "deploy")} <= shown
    assert "tests/test_nginx.py" in set(
        repo_paths(CONFIGURATION.parent.joinpath("operations.md").read_text("utf-8"))
    )
    assert len(documented_keys()) > 40


def readme_walkthrough() -> str:
    """The shell blocks of the README's walk-through, in order, as a newcomer pastes them."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Walk-through with curl") :]
    section = section[: section.index("\n## ", 1)]
    return "".join(re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_readme_walkthrough_runs_in_an_empty_directory(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Against what `make run` serves, from an empty directory, under `set -euo pipefail`."""
    config = load_config(ROOT / "config.example.yaml", env={})  # as the README says: on its own
    port = free_port()
    server = dataclasses.replace(config.server, port=port, public_url=f"http://127.0.0.1:{port}")
    script = readme_walkthrough()
    assert "http://127.0.0.1:8080" in script
    script = script.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
    with embedded_services(dataclasses.replace(config, server=server)) as embedded:
        await aiohttp_server(create_app(embedded), port=port)
        proc = await asyncio.create_subprocess_exec(
            *("bash", "-euo", "pipefail", "-c", script),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    assert proc.returncode == 0, output
    assert "\nidentical\n" in output, output
    assert '"status": "queued"' in output, output
    # Step 5 follows the deployment to the local stand-in deployer's success.
    assert '"status":"building"' in output, output
    assert '"status":"success"' in output, output  # the stream's last event
    assert '"status": "success"' in output, output  # the deployment read afterwards
    assert "verified" in output, output
    assert_sample("event-stream", output)


# --- sample outputs, checked against real runs ---------------------------------------------------

SAMPLE = re.compile(r"^<!-- sample: ([\w-]+) -->\n```[^\n]*\n(.*?)^```", re.S | re.M)
# What differs from one run to the next, each replaced by a placeholder before comparing.
VARYING = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<time>"),
    # Other numbers (sizes, counts, durations) vary too; event ids do not: a run has as many.
    (re.compile(r'(?<!id: )(?<!"id":)(?<![\d.])\d+(?:\.\d+)?'), "<n>"),
]


def normalised(text: str) -> str:
    for pattern, placeholder in VARYING:
        text = pattern.sub(placeholder, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def sample_pattern(sample: str) -> re.Pattern[str]:
    """A sample as a pattern over a normalised real output: its lines in order, contiguous, a
    line ``...`` standing for any number of lines."""
    parts = []
    for line in normalised(sample).splitlines():
        parts.append(r"(?:[^\n]*\n)*?" if line.strip() == "..." else re.escape(line) + r"\n")
    return re.compile("".join(parts))


def samples() -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {}
    for page in PAGES:
        for name, block in SAMPLE.findall(page.read_text(encoding="utf-8")):
            assert name not in found, f"two samples named {name}"
            found[name] = (page, block)
    return found


def assert_sample(name: str, real: str, replace: dict[str, str] | None = None) -> None:
    page, block = samples()[name]
    lines = block.splitlines()
    if lines and lines[0].startswith("$ "):
        lines = lines[1:]  # the command shown
    sample = "\n".join(lines) + "\n"
    for shown, actual in (replace or {}).items():
        sample = sample.replace(shown, actual)
    assert sample_pattern(sample).search(normalised(real) + "\n"), (
        f"the sample {name!r} in {page.name} no longer matches a real run:\n{real}"
    )


def as_shown(terminal: str) -> str:
    """What a terminal shows once redrawn lines settle: each line's last redraw, progress bars
    and cleared lines dropped."""
    lines = [line.rsplit("\r", 1)[-1] for line in terminal.split("\n")]
    bar = re.compile(r"^(pack|upload|download)\b.*\|")
    return "\n".join(line for line in lines if line.strip() and not bar.match(line)) + "\n"


def test_every_sample_is_checked() -> None:
    assert set(samples()) == {
        "deploy-redirected",
        "deploy-terminal",
        "list-table",
        "dry-run",
        "event-stream",
    }


def test_sample_pattern() -> None:
    pattern = sample_pattern("a 1\n...\nc <x>\n")
    assert pattern.search(normalised("z\na 22\nb\nb\nc <x>\n") + "\n")
    assert not pattern.search(normalised("a 1\nc <y>\n") + "\n")
    assert not pattern.search(normalised("a b\nc <x>\n") + "\n")


@pytest.fixture
async def example_gateway(aiohttp_server: Any) -> Any:
    """What `make run` serves (config.example.yaml, on its own: no environment), on a free port."""
    config = load_config(ROOT / "config.example.yaml", env={})
    port = free_port()
    server = dataclasses.replace(config.server, port=port, public_url=f"http://127.0.0.1:{port}")
    with embedded_services(dataclasses.replace(config, server=server)) as embedded:
        await aiohttp_server(create_app(embedded), port=port)
        yield f"http://127.0.0.1:{port}"


async def test_cli_samples_match_a_real_run(example_gateway: str, tmp_path: Path) -> None:
    # An app of its own: moto's in-process store outlives one test, and the list shows it all.
    name = f"docs-{uuid.uuid4().hex[:8]}"
    app = tmp_path / "my-app"
    app.mkdir()
    (app / "main.py").write_text('print("hello")\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "NO_COLOR"}
    env.update(GATEWAY_API_URL=example_gateway, GATEWAY_TOKEN="dev-token")
    shown_as = {"/tmp/my-app": str(app), " my-app": f" {name}"}

    argv = [GATEWAY, "deploy", "--app", name, "--git-ref", "v0.0.2", str(app)]
    redirected = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120
    )
    assert redirected.returncode == 0, redirected.stderr
    assert json.loads(redirected.stdout)["deployment"]["status"] == "success"
    assert_sample("deploy-redirected", redirected.stderr, shown_as)

    run = await on_terminal(argv[1:], env=env, stdout_on_terminal=True)
    assert run.code == 0, run.terminal
    assert_sample("deploy-terminal", as_shown(run.terminal), shown_as)

    listing = ["deployments", "list", "--app", name]
    run = await on_terminal(listing, env=env, stdout_on_terminal=True)
    assert_sample("list-table", run.terminal)

    (app / ".gitignore").write_text("*.log\n")
    (app / "debug.log").write_text("left out")
    run = await on_terminal(["deploy", "--dry-run", str(app)], env=env, stdout_on_terminal=True)
    assert_sample("dry-run", run.terminal, shown_as)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_says_it_installs_and_what_to_wait_for(tmp_path: Path) -> None:
    """A first `make run` (a .venv not made yet): what it will print, without running it."""
    proc = subprocess.run(
        ["make", "-n", "run", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout
    assert "installing the gateway and its dependencies" in said
    assert "one to two minutes" in said
    assert "serving on 127.0.0.1:8080" in said
    assert said.index("installing") < said.index("pip") < said.index("serving on")
    # The README says the same: how long the first time takes, and the line to wait for.
    readme = README.read_text(encoding="utf-8")
    assert "one to two minutes" in readme
    assert "serving on 127.0.0.1:8080" in readme
    assert "`curl` 7.76 or newer" in readme
