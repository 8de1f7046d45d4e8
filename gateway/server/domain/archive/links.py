"""The symbolic links of an archive, kept to follow links through links once the stream ends.

Links are held in a tree of their names' components, so following a path costs one dictionary
lookup per component (never a path joined again at every step), and each link's target is walked
once: what it resolves to is remembered. The tree is bounded (``MAX_LINK_BYTES``), and keeps the
archive's layout what the file system will have: a link is never inside another link (an
extractor would create it wherever that link points) and never redefined with another target
(an extractor following the first would write through it before the second replaces it).
"""

from __future__ import annotations

from ....errors import ArchiveInvalid
from .format import show

# What the names and targets of an archive's symbolic links may take, counted with the tree's
# bookkeeping (``NODE_BYTES`` a name component): tens of thousands of links, as a checked-in
# node_modules has, where one check's memory stays a few MiB.
MAX_LINK_BYTES = 16 * 1024 * 1024
# About what one component of the tree costs in memory: its node, dictionary slot and key.
NODE_BYTES = 200

_BUSY = object()  # a link being resolved: meeting it again is a loop
_LOOP = object()  # a link that leads nowhere (ELOOP), so not out either
_OUT = object()  # a link that leads outside the root


class _Node:
    """A name component: a directory on the way to a link, or a link (``target`` set)."""

    __slots__ = ("children", "key", "parent", "state", "target")

    def __init__(self, parent: _Node | None, key: bytes) -> None:
        self.parent = parent
        self.key = key
        self.children: dict[bytes, _Node] | None = None
        self.target: bytes | None = None
        # A link's resolution: None, _BUSY, _LOOP, _OUT or its place, (node, depth below it): a
        # node, and how many directories below it that no link's name reaches (no link can be
        # met there; only ``..`` brings a walk back to the node).
        self.state: object = None

    def name(self) -> bytes:
        keys = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            keys.append(node.key)
            node = node.parent
        return b"/".join(reversed(keys))


class LinkTree:
    """The archive's symbolic links by name; ``add`` each, then ``check`` once at the end."""

    def __init__(self) -> None:
        self._root = _Node(None, b"")
        self._links: list[_Node] = []
        self.size = 0  # bytes charged against MAX_LINK_BYTES

    def add(self, name_parts: list[bytes], target: bytes) -> None:
        """Keep the link ``name_parts`` -> ``target`` (a relative target, already checked not to
        climb out by itself); raise ``ArchiveInvalid`` if it cannot be kept unambiguously."""
        node = self._root
        for index, part in enumerate(name_parts):
            if node.target is not None:
                raise ArchiveInvalid(
                    f"symbolic link {show(b'/'.join(name_parts))} is inside symbolic link "
                    f"{show(b'/'.join(name_parts[:index]))}"
                )
            if node.children is None:
                node.children = {}
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(node, part)
                self._charge(NODE_BYTES + len(part))
            node = child
        name = b"/".join(name_parts)
        if node.target is not None:
            if node.target == target:
                return  # the same link twice (a directory given to tar twice): harmless
            raise ArchiveInvalid(f"symbolic link {show(name)} is defined twice")
        if node.children:
            raise ArchiveInvalid(f"symbolic link {show(name)} has other links inside it")
        node.target = target
        self._charge(len(target))
        self._links.append(node)

    def check(self) -> None:
        """Raise ``ArchiveInvalid`` if a link leads outside the root once every link of the
        archive on its way is followed, as the file system will once it is unpacked."""
        for link in self._links:
            if self._resolve(link) is _OUT:
                assert link.target is not None
                raise ArchiveInvalid(
                    f"symbolic link {show(link.name())} -> {show(link.target)} "
                    "leaves the root through links"
                )

    def _charge(self, size: int) -> None:
        self.size += size
        if self.size > MAX_LINK_BYTES:
            raise ArchiveInvalid(
                f"symbolic links' names and targets take more than {MAX_LINK_BYTES} bytes"
            )

    def _resolve(self, link: _Node) -> object:
        """Where ``link`` leads: a place, _OUT or _LOOP. Iterative (a chain of links may be as
        long as the archive), and each link's target is walked once whatever leads to it."""
        if link.state is not None:
            return link.state
        frames = [_Frame(link)]
        while frames:
            frame = frames[-1]
            target, pos = frame.target, frame.pos
            if pos > len(target):
                frames.pop()
                frame.link.state = (frame.node, frame.below)
                if frames:  # the link's place is where the walk that met it goes on
                    frames[-1].node, frames[-1].below = frame.node, frame.below
                continue
            end = target.find(b"/", pos)
            if end < 0:
                end = len(target)
            frame.pos = end + 1
            outcome = _step(frames, frame, target[pos:end])
            if outcome is not None:
                for left in frames:
                    left.link.state = outcome
                return outcome
        return link.state


class _Frame:
    """One link's target being walked: how far, and where the walk is. A chain of links is a
    stack of these: each holds no more than a few references, whatever the targets' length."""

    __slots__ = ("below", "link", "node", "pos", "target")

    def __init__(self, link: _Node) -> None:
        assert link.target is not None and link.parent is not None
        link.state = _BUSY
        self.link = link
        self.target = link.target
        self.pos = 0  # where the next component starts
        self.node = link.parent  # a target is read from the link's directory
        self.below = 0


def _step(frames: list[_Frame], frame: _Frame, part: bytes) -> object:
    """Walk one component in ``frame``: _OUT or _LOOP when the walk ends so, else None."""
    node, below = frame.node, frame.below
    if part in (b"", b"."):
        return None
    if part == b"..":
        if below:
            frame.below = below - 1
        elif node.parent is None:
            return _OUT
        else:
            frame.node = node.parent
        return None
    child = None if below or node.children is None else node.children.get(part)
    if child is None:
        frame.below = below + 1
    elif child.target is None:
        frame.node = child
    elif child.state is None:
        frames.append(_Frame(child))  # its place becomes this frame's once it is walked
    elif child.state is _BUSY or child.state is _LOOP:
        return _LOOP
    elif child.state is _OUT:
        return _OUT
    else:
        place = child.state
        assert isinstance(place, tuple)
        frame.node, frame.below = place
    return None
