"""Which blocks a CAR for a content path carries, in order (trustless gateway spec, IPIP-402).

https://specs.ipfs.tech/http-gateways/trustless-gateway/#car-responses-application-vnd-ipld-car:
first the blocks needed to verify each path segment (root to target, HAMT shards included), then by
``dag-scope``: ``block`` the target block only; ``entity`` a file's whole DAG or a directory's own
block(s) (a HAMT's shards, not its entries); ``all`` the whole DAG under the target. ``entity-bytes=from:to``
(implies ``entity``) keeps only the blocks needed to verify that byte range of a file; it is ignored
for directories. Depth-first, children in link order (``order=dfs``); ``dups=n`` sends a block once,
``dups=y`` every time the walk meets it. Blocks are read one at a time (a generator), never the whole DAG.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.export.ipfs import dagpb
from pipeline.export.ipfs.dag import BadRequest, DagReader, Node, Resolved
from pipeline.export.ipfs.multiformats import CID, DAG_PB

__all__ = ["SCOPES", "ByteRange", "CarSelection", "blocks", "parse_entity_bytes"]

SCOPES = ("all", "entity", "block")
_BOUND = re.compile(r"^-?[0-9]{1,19}$")


@dataclass(frozen=True)
class ByteRange:
    """``entity-bytes`` as written: ``from`` and ``to`` (None for ``*``), negatives from the end."""

    first: int
    last: int | None

    def resolve(self, size: int) -> tuple[int, int]:
        """[start, end) within a file of ``size`` bytes; BadRequest if entirely outside it."""
        start = self.first if self.first >= 0 else max(0, size + self.first)
        last = size - 1 if self.last is None else (self.last if self.last >= 0 else size + self.last)
        end = min(last + 1, size)
        if start >= size and size > 0:
            raise BadRequest(f"entity-bytes from {self.first} is past the end of the entity ({size} bytes)")
        return start, max(start, end)

    def __str__(self) -> str:
        return f"{self.first}:{'*' if self.last is None else self.last}"


def parse_entity_bytes(text: str) -> ByteRange:
    """``from:to`` (https://specs.ipfs.tech/http-gateways/trustless-gateway/#entity-bytes-request-query-parameter)."""
    first, sep, last = text.partition(":")
    if not sep or not _BOUND.match(first) or not (last == "*" or _BOUND.match(last)):
        raise BadRequest(f"entity-bytes={text[:64]!r} is not from:to (integers, to may be *)")
    rng = ByteRange(int(first), None if last == "*" else int(last))
    if rng.last is not None and rng.first >= 0 and rng.last >= 0 and rng.last < rng.first:
        raise BadRequest(f"entity-bytes={text!r}: to is before from")
    return rng


@dataclass(frozen=True)
class CarSelection:
    scope: str = "all"
    entity_bytes: ByteRange | None = None
    dups: bool = False


def blocks(reader: DagReader, resolved: Resolved, sel: CarSelection) -> Iterator[tuple[CID, bytes]]:
    """The CAR's blocks: pathing blocks, then the target's by scope (each read verified, one at a time)."""
    seen: set[bytes] = set()

    def emit(cid: CID, block: bytes) -> Iterator[tuple[CID, bytes]]:
        if not sel.dups:
            if cid.digest in seen:
                return
            seen.add(cid.digest)
        yield cid, block

    for cid in resolved.pathing[:-1]:
        yield from emit(cid, reader.block(reader.node(cid)))
    target = resolved.node
    if sel.scope == "block":
        yield from emit(target.cid, reader.block(target))
    elif target.is_dir and sel.scope == "entity":
        yield from _shards(reader, target, emit)
    elif sel.entity_bytes is not None and not target.is_dir:
        start, end = sel.entity_bytes.resolve(reader.size(target))
        yield from _range(reader, target, start, end, emit)
    else:
        yield from _all(reader, target, emit)


def _all(reader: DagReader, node: Node, emit) -> Iterator[tuple[CID, bytes]]:  # type: ignore[no-untyped-def]
    stack = [node.cid]
    while stack:
        cid = stack.pop()
        block = reader.block(reader.node(cid) if cid != node.cid else node)
        yield from emit(cid, block)
        if cid.codec == DAG_PB:
            stack.extend(reversed([link.cid for link in dagpb.decode(block).links]))


def _shards(reader: DagReader, node: Node, emit) -> Iterator[tuple[CID, bytes]]:  # type: ignore[no-untyped-def]
    yield from emit(node.cid, reader.block(node))
    if node.unixfs is not None and node.unixfs.type == dagpb.HAMT_SHARD and node.pb is not None:
        for link in node.pb.links:
            if link.name is not None and len(link.name) == 2:  # a sub-shard, not an entry
                yield from _shards(reader, reader.node(link.cid), emit)


def _range(reader: DagReader, node: Node, start: int, end: int, emit) -> Iterator[tuple[CID, bytes]]:  # type: ignore[no-untyped-def]
    """The blocks on the way to bytes [start, end) of a file: the root always, then overlapping children."""
    yield from emit(node.cid, reader.block(node))
    if node.unixfs is None or node.pb is None or end <= start:
        return
    offset = len(node.unixfs.data or b"")
    for link, size in zip(node.pb.links, node.unixfs.blocksizes, strict=False):
        if offset >= end:
            break
        if offset + size > start:
            yield from _range(reader, reader.node(link.cid), max(0, start - offset), min(size, end - offset), emit)
        offset += size
