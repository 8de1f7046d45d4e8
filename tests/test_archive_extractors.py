"""The archive check against real extractors: each crafted form is fed to the check, and unpacked
with Python's tarfile (no filter) and GNU tar in a jail; the check must refuse every archive an
extractor would write outside its root. One row per form of docs/api.md's rule "one reading of
every name", and a property test over random mixes of those forms."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ArchiveInvalid
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.archive.inspector import ArchiveInspector

from .archives import (
    app,
    gz,
    long_member,
    pax_member,
    raw_header,
    raw_member,
    raw_tar,
    tar,
)
from .extractors import (
    GNU_TAR,
    GO,
    build_go_extractor,
    extract_with_gnu_tar,
    extract_with_go,
    extract_with_tarfile,
    gnu_tar_lists,
    landed_outside,
    make_jail,
)

BIG = 1 << 40


def check(data: bytes) -> ArchiveFacts | str:
    """The check's verdict on ``data`` (an uncompressed tar): its facts, or its reason."""
    inspector = ArchiveInspector(BIG, BIG)
    try:
        compressed = gz(data)
        for start in range(0, len(compressed), 4096):
            inspector.feed(compressed[start : start + 4096])
        return inspector.finish()
    except ArchiveInvalid as exc:
        return exc.reason


@dataclass(frozen=True)
class Form:
    """A crafted archive, what the check says of it, and what tarfile does with it."""

    build: Callable[[bytes], bytes]  # the jail's path (for absolute names) -> a tar
    refused: str | None  # a part of the check's reason, or None: accepted
    escapes: str = ""  # the lesson: which extractors write outside their root ("tarfile go tar")
    extract: bool = True  # False: a form tarfile may loop on (it walks back on negative sizes)
    tar_lists: bool = True  # whether GNU tar reads the whole archive without an error


def file_(name: bytes, **fields: object) -> bytes:
    return raw_member(name, b"data\n", **fields)


def link(name: bytes, target: bytes, **fields: object) -> bytes:
    return raw_member(name, kind=b"2", link=target, **fields)


def hostile_file(name: bytes = b"../../escaped") -> bytes:
    return file_(name)


FORMS: dict[str, Form] = {
    # Accepted: what writers make, one name for every extractor.
    "pax archive": Form(lambda j: tar(app()), None),
    "gnu archive": Form(lambda j: tar(app(), tarfile.GNU_FORMAT), None),
    "ustar prefix under posix magic": Form(
        lambda j: raw_tar(file_(b"name", prefix=b"r/" + b"p" * 120)), None
    ),
    "gnu long name and link": Form(
        lambda j: raw_tar(
            long_member(b"r/" + b"n" * 200),
            long_member(b"../" + b"t" * 200, b"K"),
            link(b"r/short", b"t", magic="gnu"),
        ),
        None,
    ),
    "pax path and linkpath": Form(
        lambda j: raw_tar(
            pax_member([(b"path", b"r/" + b"n" * 200), (b"linkpath", b"x" * 150)]),
            link(b"short", b"t"),
        ),
        None,
    ),
    "gnu sparse name and made-up header name": Form(
        lambda j: raw_tar(
            pax_member([(b"GNU.sparse.name", b"r/real")]), file_(b"r/GNUSparseFile.1/real")
        ),
        None,
    ),
    "pax global header with a comment": Form(
        lambda j: raw_tar(pax_member([(b"comment", b"hi")], b"g"), file_(b"r/a")), None
    ),
    "same symbolic link twice": Form(
        lambda j: raw_tar(link(b"r/l", b"a"), link(b"r/l", b"a")), None
    ),
    # Refused: a name that is unsafe for everyone.
    "dot dot name": Form(lambda j: raw_tar(hostile_file()), "'..' component", escapes="tarfile go"),
    "absolute name": Form(
        lambda j: raw_tar(hostile_file(j + b"/abs")), "absolute name", escapes="tarfile"
    ),
    "gnu long name climbing out": Form(
        lambda j: raw_tar(long_member(b"../../escaped"), file_(b"ok", magic="gnu")),
        "'..'",
        escapes="tarfile go",
    ),
    "pax path climbing out": Form(
        lambda j: raw_tar(pax_member([(b"path", b"../../escaped")]), file_(b"ok")),
        "'..'",
        escapes="tarfile go",
    ),
    "gnu sparse name climbing out": Form(
        lambda j: raw_tar(pax_member([(b"GNU.sparse.name", b"../../escaped")]), file_(b"ok")),
        "'..'",
        escapes="tarfile",
    ),
    "absolute symbolic link written through": Form(
        lambda j: raw_tar(link(b"l", j), file_(b"l/escaped")),
        "leaves the root",
        escapes="tarfile go tar",
    ),
    # Refused: forms extractors read differently (the attack's findings).
    "prefix under gnu magic": Form(
        lambda j: raw_tar(file_(b"escaped", magic="gnu", prefix=b"../..")),
        "extractors read its name differently",
        escapes="tarfile go",
    ),
    "prefix under v7 header": Form(
        lambda j: raw_tar(file_(b"escaped", magic="v7", prefix=b"../..")),
        "extractors read its name differently",
        escapes="tarfile",
    ),
    "prefix of a star header past 131 bytes": Form(
        lambda j: raw_tar(file_(b"n", prefix=b"p" * 140, trailer=b"tar\0")),
        "extractors read its name differently",
    ),
    "gnu sparse name then a different path": Form(
        lambda j: raw_tar(
            pax_member([(b"GNU.sparse.name", b"ok"), (b"path", b"../../escaped")]), file_(b"ok")
        ),
        "GNU.sparse.name and its path",
        escapes="tarfile go",
    ),
    "gnu long name then a different pax path": Form(
        lambda j: raw_tar(
            long_member(b"../../escaped"), pax_member([(b"path", b"ok")]), file_(b"ok")
        ),
        "PAX path and its GNU long name",
        escapes="tarfile go",
    ),
    "gnu long link then a different pax linkpath": Form(
        lambda j: raw_tar(
            long_member(b"../../..", b"K"),
            pax_member([(b"linkpath", b"ok")]),
            link(b"l", b"ok"),
            file_(b"l/escaped"),
        ),
        "PAX linkpath and its GNU long link",
        escapes="tarfile go",
    ),
    "two pax headers for one entry": Form(
        lambda j: raw_tar(
            pax_member([(b"path", b"../../escaped")]), pax_member([(b"path", b"ok")]), file_(b"ok")
        ),
        "two PAX headers for one entry",
        escapes="tarfile",
    ),
    "two gnu long names for one entry": Form(
        lambda j: raw_tar(long_member(b"../../escaped"), long_member(b"ok"), file_(b"ok")),
        "two GNU long names",
        escapes="tarfile",
    ),
    "two path records in one pax header": Form(
        lambda j: raw_tar(
            pax_member([(b"path", b"../../escaped"), (b"path", b"ok")]), file_(b"ok")
        ),
        "two different 'path' records",
    ),
    "pax global path": Form(
        lambda j: raw_tar(pax_member([(b"path", b"ok")], b"g"), hostile_file()),
        "PAX global header sets 'path'",
        escapes="go",
    ),
    "pax global linkpath": Form(
        lambda j: raw_tar(
            pax_member([(b"linkpath", b"ok")], b"g"), link(b"l", b"../../.."), file_(b"l/escaped")
        ),
        "PAX global header sets 'linkpath'",
        escapes="go",
    ),
    "pax global size": Form(
        lambda j: raw_tar(pax_member([(b"size", b"0")], b"g"), file_(b"a")),
        "PAX global header sets 'size'",
        tar_lists=False,
    ),
    "solaris extended header": Form(
        lambda j: raw_tar(pax_member([(b"path", b"ok")], b"X"), file_(b"a")),
        "Solaris extended header",
    ),
    "volume label named out": Form(
        lambda j: raw_tar(raw_member(b"../../escaped", b"label\n", b"V")),
        "'..'",
        escapes="tarfile go",
    ),
    "symbolic link with a size hiding a header": Form(
        lambda j: raw_tar(link(b"l", b"t", size=512), hostile_file()),
        "has a size",
        escapes="tarfile go",
        tar_lists=False,
    ),
    "symbolic link inside a symbolic link": Form(
        lambda j: raw_tar(
            raw_member(b"q", kind=b"5"),
            raw_member(b"e", kind=b"5"),
            link(b"a", b"q"),
            link(b"a/c", b"../e"),
            link(b"z", b"q/c/../.."),
            file_(b"z/escaped"),
        ),
        "is inside symbolic link 'a'",
        escapes="tarfile go tar",
    ),
    "symbolic link redefined after use": Form(
        lambda j: raw_tar(
            raw_member(b"r", kind=b"5"),
            link(b"r/b", b".."),
            link(b"r/a", b"b/.."),
            file_(b"r/a/escaped"),
            link(b"r/b", b"c"),
        ),
        "'r/b' is defined twice",
        escapes="tarfile go tar",
    ),
    # Refused: numbers only some readers take (the parser walked back on a negative size).
    "negative octal size": Form(
        lambda j: raw_tar(file_(b"a", size=b"-0001000\0\0\0\0")),
        "bad size field",
        extract=False,
        tar_lists=False,
    ),
    "underscore in octal size": Form(
        lambda j: raw_tar(file_(b"a", size=b"0000001_0\0\0\0")),
        "bad size field",
        extract=False,
        tar_lists=False,
    ),
    "plus sign in octal size": Form(
        lambda j: raw_tar(file_(b"a", size=b"+10\0" + bytes(8))),
        "bad size field",
        extract=False,
        tar_lists=False,
    ),
    "nul before the octal digits": Form(
        lambda j: raw_tar(file_(b"a", size=b"\x0000000000012")), "bad size field", extract=False
    ),
    "negative pax size": Form(
        lambda j: raw_tar(pax_member([(b"size", b"-512")]), file_(b"a")),
        "bad PAX size",
        extract=False,
        tar_lists=False,
    ),
    "pax size with a plus sign": Form(
        lambda j: raw_tar(pax_member([(b"size", b"+5")]), file_(b"a")),
        "bad PAX size",
        extract=False,
        tar_lists=False,
    ),
    "pax record length with a sign": Form(
        lambda j: raw_tar(
            raw_header(b"././@PaxHeader", b"x", 12) + (b"+12 path=a\n").ljust(512, b"\0"),
            file_(b"a"),
        ),
        "malformed PAX",
        extract=False,
        tar_lists=False,
    ),
    # Refused: bounds on what one check holds.
    "name past PATH_MAX": Form(
        lambda j: raw_tar(pax_member([(b"path", b"r/" + b"n" * 4100)]), file_(b"a")),
        "longer than 4096",
    ),
    "link target past PATH_MAX": Form(
        lambda j: raw_tar(pax_member([(b"linkpath", b"a/" * 2100)]), link(b"l", b"a")),
        "longer than 4096",
    ),
    "gnu long name record past PATH_MAX": Form(
        lambda j: raw_tar(long_member(b"a" * 5000), file_(b"a")), "more than 4097"
    ),
}


@pytest.mark.parametrize("name", list(FORMS))
def test_the_check_judges_each_form(name: str, tmp_path: Path) -> None:
    form = FORMS[name]
    verdict = check(form.build(str(tmp_path / "jail").encode()))
    if form.refused is None:
        assert isinstance(verdict, ArchiveFacts), verdict
    else:
        assert isinstance(verdict, str), f"accepted: {verdict}"
        assert form.refused in verdict


def need(program: str | None, what: str) -> None:
    """Skip without ``program``, except on CI, where a missing extractor fails the test."""
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is not installed (CI=true)")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def go_extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(GO, "go")
    return build_go_extractor(tmp_path_factory.mktemp("go"))


def extract(extractor: str, data: bytes, dest: Path, go_binary: Path | None) -> None:
    if extractor == "tarfile":
        extract_with_tarfile(data, dest)
    elif extractor == "go":
        assert go_binary is not None
        extract_with_go(go_binary, data, dest)
    else:
        extract_with_gnu_tar(data, dest)


@pytest.mark.parametrize("extractor", ["tarfile", "go", "tar"])
@pytest.mark.parametrize("name", list(FORMS))
def test_extractors_write_outside_exactly_for_the_attacks(
    name: str, extractor: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each hostile row is a real attack on the extractors it names (else the row proves
    nothing), and each accepted row unpacks inside its root for all of them."""
    form = FORMS[name]
    if extractor == "tarfile" and not form.extract:
        return  # a negative size makes tarfile walk back, maybe for ever: its number rows
    need(GNU_TAR if extractor == "tar" else "tarfile", "GNU tar")
    binary = request.getfixturevalue("go_extractor") if extractor == "go" else None
    jail, dest = make_jail(tmp_path)
    extract(extractor, form.build(str(jail).encode()), dest, binary)
    landed = landed_outside(jail, dest)
    assert bool(landed) == (extractor in form.escapes.split()), landed
    assert not landed or form.refused is not None


@pytest.mark.parametrize("name", [name for name, form in FORMS.items() if not form.tar_lists])
def test_gnu_tar_refuses_the_numbers_the_check_refuses(name: str) -> None:
    need(GNU_TAR, "GNU tar")
    assert not gnu_tar_lists(FORMS[name].build(b"/nowhere"))


# The property: random mixes of the forms above, with names and targets made of a few parts,
# some of them ".." or absolute; whatever the check accepts, no extractor writes outside.
# Weighted towards what passes, so that many examples get as far as the extractors.
PARTS = st.sampled_from([b"r", b"a", b"b", b"r", b"a", b"b", b".", b".."])
NAMES = st.tuples(
    st.sampled_from([False] * 7 + [True]), st.lists(PARTS, min_size=1, max_size=4).map(tuple)
)
NAME_FORMS = ["plain"] * 3 + ["prefix", "long", "pax"] * 2 + ["gnu prefix", "v7 prefix"]
NAME_FORMS += ["sparse", "long and pax", "global", "two pax", "two long"]
LINK_FORMS = ["plain"] * 3 + ["long", "pax"] * 2 + ["long and pax", "global"]

Name = tuple[bool, tuple[bytes, ...]]


@dataclass(frozen=True)
class Planned:
    """One entry of a random archive: its kind, names and how they are written."""

    kind: bytes
    name: Name
    decoy: Name  # a second name for the forms that carry two
    same: bool  # the decoy is the name itself
    name_form: str
    target: Name
    link_form: str


def render(name: Name, jail: bytes) -> bytes:
    absolute, parts = name
    joined = b"/".join(parts)
    return jail + b"/" + joined if absolute else joined


Records = list[tuple[bytes, bytes]]


def entry_members(plan: Planned, jail: bytes) -> list[bytes]:
    """The members writing ``plan``: meta headers (one local PAX header for the name's and the
    target's records, as writers make), then the entry and its data."""
    name = render(plan.name, jail)
    decoy = name if plan.same else render(plan.decoy, jail)
    target = render(plan.target, jail) if plan.kind in b"12" else b""
    meta, records, fields = name_members(plan.name_form, name, decoy)
    link_meta, link_records, link_field = link_members(plan.link_form, target, decoy)
    local = [pax_member(records + link_records)] if records or link_records else []
    data = b"data\n" if plan.kind == b"0" else b""
    header_name = fields.pop("name", decoy)
    assert isinstance(header_name, bytes)
    entry = raw_member(header_name[:100], data, plan.kind, link=link_field[:100], **fields)
    return [*meta, *link_meta, *local, entry]


def name_members(
    form: str, name: bytes, decoy: bytes
) -> tuple[list[bytes], Records, dict[str, object]]:
    prefix, _, last = name.rpartition(b"/")
    split = {"name": last, "prefix": prefix[:155]}
    return {
        "plain": ([], [], {"name": name}),
        "prefix": ([], [], split),
        "gnu prefix": ([], [], {**split, "magic": "gnu"}),
        "v7 prefix": ([], [], {**split, "magic": "v7"}),
        "long": ([long_member(name)], [], {}),
        "pax": ([], [(b"path", name)], {}),
        "sparse": ([], [(b"GNU.sparse.name", name), (b"path", decoy)], {}),
        "long and pax": ([long_member(name)], [(b"path", decoy)], {}),
        "global": ([pax_member([(b"path", name)], b"g")], [], {}),
        "two pax": ([pax_member([(b"path", name)])], [(b"path", decoy)], {}),
        "two long": ([long_member(name), long_member(decoy)], [], {}),
    }[form]


def link_members(form: str, target: bytes, decoy: bytes) -> tuple[list[bytes], Records, bytes]:
    return {
        "plain": ([], [], target),
        "long": ([long_member(target, b"K")], [], decoy),
        "pax": ([], [(b"linkpath", target)], decoy),
        "long and pax": ([long_member(target, b"K")], [(b"linkpath", decoy)], decoy),
        "global": ([pax_member([(b"linkpath", target)], b"g")], [], decoy),
    }[form]


PLANS = st.builds(
    Planned,
    kind=st.sampled_from([b"0", b"5", b"2", b"2", b"1"]),
    name=NAMES,
    decoy=NAMES,
    same=st.booleans(),
    name_form=st.sampled_from(NAME_FORMS),
    target=NAMES,
    link_form=st.sampled_from(LINK_FORMS),
)


def build_planned(plans: list[Planned], jail: bytes) -> bytes:
    members = [m for plan in plans for m in entry_members(plan, jail)]
    # A file written through every name: a link that leads out makes it land outside.
    members += [file_(render(plan.name, jail) + b"/through") for plan in plans]
    return raw_tar(*members)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plans=st.lists(PLANS, min_size=1, max_size=5))
def test_what_the_check_accepts_no_extractor_writes_outside(
    plans: list[Planned], go_extractor: Path
) -> None:
    need(GNU_TAR, "GNU tar")
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(check(build_planned(plans, str(Path(folder) / "jail").encode())), str):
            return  # refused: nothing to unpack
        for extractor in ("tarfile", "go", "tar"):
            with tempfile.TemporaryDirectory() as each:
                jail, dest = make_jail(Path(each))
                extract(extractor, build_planned(plans, str(jail).encode()), dest, go_extractor)
                assert landed_outside(jail, dest) == [], extractor
