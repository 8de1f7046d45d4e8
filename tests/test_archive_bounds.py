"""What one archive check holds and walks is bounded whatever the archive: PAX records, the
archive's symbolic links, chains of links as long as the archive (docs/api.md, "The archive
check"). Their cost is measured in bench/bench_archive_hostile.py, not timed here."""

from __future__ import annotations

import gzip
import sys

import pytest

from gateway.errors import ArchiveInvalid
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.archive.inspector import ArchiveInspector
from gateway.server.domain.archive.links import MAX_LINK_BYTES, NODE_BYTES
from gateway.server.domain.archive.names import MAX_PAX_RECORDS

from .archives import pax_data, pax_member, raw_member, raw_tar

BIG = 1 << 40


def inspect(tar_bytes: bytes) -> ArchiveFacts:
    inspector = ArchiveInspector(BIG, BIG)
    data = gzip.compress(tar_bytes, 1, mtime=0)  # these archives are large: compress fast
    for start in range(0, len(data), 1 << 20):
        inspector.feed(data[start : start + 1 << 20])
    return inspector.finish()


def refusal(tar_bytes: bytes) -> str:
    with pytest.raises(ArchiveInvalid) as caught:
        inspect(tar_bytes)
    return caught.value.reason


def link(name: bytes, target: bytes) -> bytes:
    if len(target) <= 100:
        return raw_member(name, kind=b"2", link=target)
    return pax_member([(b"linkpath", target)]) + raw_member(name, kind=b"2")


def tiny_global_headers(records: int) -> list[bytes]:
    """PAX global headers of ``records`` six-byte records (``6 a=b\\n``), 1 MiB at most each."""
    per_header = 1024 * 1024 // 6
    members = []
    while records > 0:
        count = min(records, per_header)
        data = pax_data([(b"a", b"b")]) * count
        members.append(raw_member(b"././@PaxHeader", data, b"g"))
        records -= count
    return members


def test_pax_records_past_the_budget_are_refused_global_and_local_alike() -> None:
    assert pax_data([(b"a", b"b")]) == b"6 a=b\n"
    within = tiny_global_headers(MAX_PAX_RECORDS - 2)
    local = pax_member([(b"path", b"r/a"), (b"mtime", b"1")])
    assert inspect(raw_tar(*within, local, raw_member(b"x", b"x"))).files == 1
    local = pax_member([(b"path", b"r/a"), (b"mtime", b"1"), (b"atime", b"1")])
    reason = refusal(raw_tar(*within, local, raw_member(b"x", b"x")))
    assert f"more than {MAX_PAX_RECORDS} PAX records" in reason


def test_links_past_their_share_are_refused() -> None:
    target = b"t" * 3999  # within PATH_MAX
    each = len(target) + NODE_BYTES + len(b"9999")  # its target, and its name in the tree
    count = MAX_LINK_BYTES // each
    within = [link(b"r/%d" % i, target) for i in range(count - 1)]
    assert inspect(raw_tar(*within)).entries == count - 1
    past = [*within, link(b"r/a", target), link(b"r/b", target)]
    reason = refusal(raw_tar(*past))
    assert f"symbolic links' names and targets take more than {MAX_LINK_BYTES} bytes" in reason


def test_a_chain_of_links_longer_than_the_stack_is_followed() -> None:
    count = sys.getrecursionlimit() * 3
    chain = [link(b"l%d" % i, b"l%d" % (i + 1)) for i in range(count)]
    inside = raw_tar(*chain, link(b"l%d" % count, b"d"))
    assert inspect(inside).entries == count + 1
    outside = raw_tar(*chain, link(b"l%d" % count, b"."), link(b"up", b"l0/.."))
    assert "symbolic link 'up' -> 'l0/..' leaves the root through links" in refusal(outside)


def test_a_chain_longer_than_linux_follows_is_still_judged() -> None:
    """Linux gives up after 40 links (ELOOP), but from the 60th link of 100 the way out is 40
    links long: the check refuses it whichever link an extractor starts from."""
    chain = [link(b"l%d" % i, b"l%d" % (i + 1)) for i in range(100)]
    up = link(b"sub/s", b"..")  # the root, from sub/
    reason = refusal(raw_tar(*chain, up, link(b"l100", b"sub/s/..")))
    assert "leaves the root through links" in reason


def test_links_through_each_other_in_a_loop_lead_nowhere() -> None:
    loop = [link(b"a", b"b/x"), link(b"b", b"c"), link(b"c", b"b")]
    assert inspect(raw_tar(*loop, link(b"d", b"a/.."))).entries == 4


def test_a_link_reached_again_after_its_walk_is_remembered() -> None:
    """Many links through one link that leads up (``sub/s`` -> ``..``, the root): each leads
    where it leads, the first and the last to be walked alike."""
    up = link(b"sub/s", b"..")
    users = [link(b"sub/u%d" % i, b"s/x%d" % i) for i in range(50)]
    assert inspect(raw_tar(up, *users)).entries == 51
    out = link(b"sub/v", b"s/..")
    assert "'sub/v' -> 's/..' leaves the root through links" in refusal(raw_tar(up, *users, out))
    assert "'sub/v' -> 's/..' leaves the root through links" in refusal(raw_tar(out, up, *users))
