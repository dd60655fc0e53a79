"""Reading UnixFS (https://specs.ipfs.tech/unixfs/) from verified blocks: nodes, paths, file bytes.

Path resolution records what the path gateway spec asks a gateway to report and a trustless client
needs to verify: the CID each path segment resolved to (``X-Ipfs-Roots``,
https://specs.ipfs.tech/http-gateways/path-gateway/#x-ipfs-roots-response-header) and every block
read on the way, HAMT shards included (the pathing blocks a CAR for a path starts with,
https://specs.ipfs.tech/http-gateways/trustless-gateway/#car-responses-application-vnd-ipld-car).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.export.ipfs import dagpb
from pipeline.export.ipfs.blocks import BlockSource, VerifiedBlocks
from pipeline.export.ipfs.multiformats import CID, DAG_PB, RAW
from pipeline.export.ipfs.unixfs import hamt_hash

__all__ = ["LAZY_RAW", "BadRequest", "DagReader", "FileSpan", "Node", "NotFound", "Resolved", "depth_first"]


LAZY_RAW = 64 << 10  # raw blocks larger than this stay on disk until sent (sendfile)


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Node:
    cid: CID
    block: bytes
    pb: dagpb.Node | None
    unixfs: dagpb.UnixFSData | None
    file: Path | None = None  # a large raw block left on disk (verified): ``block`` is then empty
    file_size: int = 0

    @property
    def is_dir(self) -> bool:
        return self.unixfs is not None and self.unixfs.type in (dagpb.DIRECTORY, dagpb.HAMT_SHARD)


@dataclass(frozen=True)
class FileSpan:
    """``length`` bytes at ``offset`` of a verified block file (sent with ``sendfile``)."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True)
class Resolved:
    node: Node
    roots: tuple[CID, ...]     # the CID of the root and of each path segment
    pathing: tuple[CID, ...]   # every block read to resolve the path (root to target, HAMT shards too)


class DagReader:
    """Reads UnixFS from the store's blocks (or any verifying :class:`BlockSource`), verifying every block."""

    def __init__(self, store: BlockSource, cache_nodes: int = 4096):
        self.store = store
        # decoded directory/file nodes by CID (immutable); only over a verified-once source
        self._nodes: OrderedDict[bytes, Node] | None = OrderedDict() if isinstance(store, VerifiedBlocks) else None
        self._max_nodes = cache_nodes

    def node(self, cid: CID) -> Node:
        cache = self._nodes
        if cache is not None:
            key = bytes(cid)
            hit = cache.get(key)
            if hit is not None:
                return hit
            node = self._load(cid)
            if node.file is not None or len(node.block) <= 256 << 10:
                cache[key] = node
                if len(cache) > self._max_nodes:
                    cache.popitem(last=False)
            return node
        return self._load(cid)

    def _load(self, cid: CID) -> Node:
        if not self.store.has(cid.hex_digest):
            raise NotFound(f"block {cid} is not in this gateway's store")
        if cid.codec == RAW and isinstance(self.store, VerifiedBlocks) and not self.store.cached(cid.hex_digest):
            path = self.store.verified_file(cid.hex_digest)  # hashed the first time only
            if path is not None:
                size = path.stat().st_size
                if size > LAZY_RAW:
                    return Node(cid, b"", None, None, path, size)
        block = self.store.read_bytes(cid.hex_digest)  # raises IntegrityError if corrupt
        if cid.codec == RAW:
            return Node(cid, block, None, None)
        try:
            pb = dagpb.decode(block)
            return Node(cid, block, pb, dagpb.UnixFSData.decode(pb.data or b""))
        except (dagpb.DagPBError, UnicodeDecodeError) as e:
            raise NotFound(f"{cid} is not a UnixFS node: {e}") from None

    def block(self, node: Node) -> bytes:
        """The node's block bytes (read from its verified file if it was left on disk)."""
        return node.file.read_bytes() if node.file is not None else node.block

    def lookup(self, node: Node, name: str, shards: list[CID] | None = None) -> CID | None:
        """The CID ``name`` links to in a directory; HAMT sub-shards read on the way go to ``shards``."""
        assert node.pb is not None and node.unixfs is not None
        if node.unixfs.type == dagpb.DIRECTORY:
            return next((link.cid for link in node.pb.links if link.name == name), None)
        digest, depth = hamt_hash(name), 0
        while True:
            if depth >= len(digest):
                return None
            label = f"{digest[depth]:02X}"
            link = next((x for x in node.pb.links if x.name and x.name.startswith(label)), None)
            if link is None:
                return None
            if link.name == label:  # a sub-shard: one level deeper
                node, depth = self.node(link.cid), depth + 1
                if node.pb is None or node.unixfs is None or node.unixfs.type != dagpb.HAMT_SHARD:
                    raise NotFound(f"{link.cid} is not a HAMT shard")
                if shards is not None:
                    shards.append(link.cid)
                continue
            return link.cid if link.name == label + name else None

    def entries(self, node: Node) -> Iterator[tuple[str, dagpb.Link]]:
        assert node.pb is not None and node.unixfs is not None
        if node.unixfs.type == dagpb.DIRECTORY:
            yield from ((link.name or "", link) for link in node.pb.links)
            return
        for link in node.pb.links:
            name = link.name or ""
            if len(name) == 2:
                yield from self.entries(self.node(link.cid))
            else:
                yield name[2:], link

    def resolve_path(self, root: CID, segments: list[str]) -> Resolved:
        node = self.node(root)
        roots, pathing = [root], [root]
        for i, seg in enumerate(segments):
            if not node.is_dir:
                raise NotFound(f"/{'/'.join(segments[:i])} is a file, not a directory")
            cid = self.lookup(node, seg, pathing)
            if cid is None:
                raise NotFound(f"no such path /{'/'.join(segments[:i + 1])} in {root}")
            node = self.node(cid)
            roots.append(cid)
            pathing.append(cid)
        return Resolved(node, tuple(roots), tuple(pathing))

    def resolve(self, root: CID, segments: list[str]) -> Node:
        return self.resolve_path(root, segments).node

    def size(self, node: Node) -> int:
        if node.unixfs is None:
            return node.file_size if node.file is not None else len(node.block)
        if node.unixfs.filesize is not None:
            return node.unixfs.filesize
        return len(node.unixfs.data or b"") + sum(node.unixfs.blocksizes)

    def spans(self, node: Node, start: int, end: int) -> Iterator[bytes | FileSpan]:
        """File bytes [start, end): inline bytes, or a verified raw leaf's file span where the source has
        files (each leaf verified when reached, once per :class:`VerifiedBlocks`)."""
        if node.unixfs is None:
            if node.file is not None:
                if end > start:
                    yield FileSpan(node.file, start, end - start)
            else:
                yield node.block[start:end]
            return
        data = node.unixfs.data or b""
        if start < len(data):
            yield data[start:min(end, len(data))]
        offset = len(data)
        assert node.pb is not None
        for link, size in zip(node.pb.links, node.unixfs.blocksizes, strict=False):
            if offset >= end:
                break
            if offset + size > start:
                if link.cid.codec == RAW and isinstance(self.store, VerifiedBlocks):
                    lo, hi = max(0, start - offset), min(size, end - offset)
                    path = self.store.verified_file(link.cid.hex_digest)
                    if path is not None:
                        if path.stat().st_size != size:
                            raise NotFound(f"leaf {link.cid} has {path.stat().st_size} bytes, its parent "
                                           f"{node.cid} says {size}")
                        yield FileSpan(path, lo, hi - lo)
                        offset += size
                        continue
                child = self.node(link.cid)
                yield from self.spans(child, max(0, start - offset), min(size, end - offset))
            offset += size

    def read(self, node: Node, start: int, end: int) -> Iterator[bytes]:
        """File bytes [start, end) by walking the DAG (raw or dag-pb leaves)."""
        for chunk in self.spans(node, start, end):
            if isinstance(chunk, FileSpan):
                with open(chunk.path, "rb") as f:
                    f.seek(chunk.offset)
                    yield f.read(chunk.length)
            else:
                yield chunk


def depth_first(root: CID, node: Callable[[CID], bytes | None]) -> Iterator[tuple[CID, bytes | None]]:
    """Each block under ``root`` once, depth-first with links in order (the CAR order, trustless
    gateway spec ``order=dfs``), with what ``node`` gave for it. ``node`` must give every dag-pb
    node's block (its links are followed); it may give None for a raw leaf it need not read."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid.digest in seen:
            continue
        seen.add(cid.digest)
        block = node(cid)
        yield cid, block
        if cid.codec == DAG_PB:
            if block is None:
                raise ValueError(f"{cid}: a dag-pb node's block is needed to follow its links")
            stack.extend(reversed([link.cid for link in dagpb.decode(block).links]))
