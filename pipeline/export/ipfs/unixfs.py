"""A UnixFS importer in Python, no daemon, for the two profiles of IPIP-499.

``unixfs-v1-2025``: CIDv1, raw leaves, 1 MiB chunks, balanced DAG of at most 1024 links per node,
HAMT sharding when a directory's serialized block would pass 256 KiB.
``unixfs-v0-2015`` (kubo's default import): CIDv0, dag-pb leaves, 256 KiB chunks, 174 links per
node, HAMT past a 256 KiB estimate of link bytes (name + CID length).

Directories list links sorted by name bytes with cumulative Tsize. HAMT shards use fanout 256 and
the first 64 bits of murmur3-x64-128 (hash type 0x22); each level consumes one byte of the hash; an
entry's link is named by the two-digit upper-case hex slot plus its name, a sub-shard's by the slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from pipeline.export.ipfs.dagpb import DIRECTORY, FILE, HAMT_SHARD, Link, Node, UnixFSData
from pipeline.export.ipfs.multiformats import CID, DAG_PB, RAW

MURMUR3_X64_64 = 0x22


@dataclass(frozen=True)
class Profile:
    name: str
    cid_version: int
    raw_leaves: bool
    chunk_size: int
    max_links: int
    shard_estimate: str          # "block-bytes" or "links-bytes"
    shard_threshold: int = 256 * 1024
    fanout: int = 256


V1_2025 = Profile("unixfs-v1-2025", 1, True, 1 << 20, 1024, "block-bytes")
V0_2015 = Profile("unixfs-v0-2015", 0, False, 256 << 10, 174, "links-bytes")
PROFILES = {p.name: p for p in (V1_2025, V0_2015)}


@dataclass(frozen=True)
class Entry:
    """An imported node: its CID, cumulative size (Tsize) and, for files, the content size."""

    cid: CID
    size: int
    filesize: int = 0
    is_dir: bool = False


PutBlock = Callable[[CID, bytes], None]
Tree = dict[str, Union[bytes, Path, "Tree", Entry]]

# -- murmur3 x64 128 (seed 0), for HAMT slots ------------------------------------------------
_M64 = (1 << 64) - 1
_C1, _C2 = 0x87C37B91114253D5, 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    h1 = h2 = seed
    n = len(data) // 16
    for i in range(n):
        k1 = int.from_bytes(data[16 * i:16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8:16 * i + 16], "little")
        k1 = (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
        h1 ^= k1
        h1 = (_rotl(h1, 27) + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        k2 = (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
        h2 ^= k2
        h2 = (_rotl(h2, 31) + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[16 * n:]
    k1 = int.from_bytes(tail[:8], "little") if tail else 0
    k2 = int.from_bytes(tail[8:16], "little") if len(tail) > 8 else 0
    if len(tail) > 8:
        h2 ^= (_rotl((k2 * _C2) & _M64, 33) * _C1) & _M64
    if tail:
        h1 ^= (_rotl((k1 * _C1) & _M64, 31) * _C2) & _M64
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1, h2


def hamt_hash(name: str) -> bytes:
    """The bytes a HAMT consumes, most significant slot first (as go-unixfs/boxo and js-ipfs-unixfs)."""
    h1, _ = murmur3_x64_128(name.encode())
    return h1.to_bytes(8, "big")


# -- the importer ------------------------------------------------------------------------------

class Importer:
    def __init__(self, profile: Profile, put: PutBlock):
        self.profile = profile
        self._put = put

    def _block(self, block: bytes, codec: int) -> CID:
        cid = CID.of(block, codec, self.profile.cid_version if codec == DAG_PB else 1)
        self._put(cid, block)
        return cid

    def _node(self, node: Node) -> tuple[CID, int]:
        block = node.encode()
        return self._block(block, DAG_PB), len(block)

    # files
    def _leaf(self, chunk: bytes) -> Entry:
        if self.profile.raw_leaves:
            return Entry(self._block(chunk, RAW), len(chunk), len(chunk))
        data = UnixFSData(FILE, data=chunk, filesize=len(chunk)).encode()
        cid, n = self._node(Node(data=data))
        return Entry(cid, n, len(chunk))

    def file_chunks(self, chunks: Iterable[bytes]) -> Entry:
        leaves = [self._leaf(c) for c in chunks] or [self._leaf(b"")]
        if len(leaves) == 1:
            return leaves[0]
        level = leaves
        while True:
            level = [self._parent(level[i:i + self.profile.max_links])
                     for i in range(0, len(level), self.profile.max_links)]
            if len(level) == 1:
                return level[0]

    def _parent(self, children: list[Entry]) -> Entry:
        filesize = sum(c.filesize for c in children)
        data = UnixFSData(FILE, filesize=filesize, blocksizes=[c.filesize for c in children]).encode()
        links = tuple(Link(c.cid, "", c.size) for c in children)
        cid, n = self._node(Node(links, data))
        return Entry(cid, n + sum(c.size for c in children), filesize)

    def file(self, data: bytes) -> Entry:
        size = self.profile.chunk_size
        return self.file_chunks(data[i:i + size] for i in range(0, len(data), size))

    def file_at(self, path: Path) -> Entry:
        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(self.profile.chunk_size):
                    yield chunk
        return self.file_chunks(chunks())

    # directories
    def directory(self, children: dict[str, Entry]) -> Entry:
        links = tuple(Link(e.cid, name, e.size) for name, e in sorted(children.items(),
                                                                     key=lambda kv: kv[0].encode()))
        node = Node(links, UnixFSData(DIRECTORY).encode())
        if self._estimate(node) > self.profile.shard_threshold:
            return self._shard([(name, e, hamt_hash(name)) for name, e in children.items()], 0)
        cid, n = self._node(node)
        return Entry(cid, n + sum(e.size for e in children.values()), is_dir=True)

    def _estimate(self, node: Node) -> int:
        if self.profile.shard_estimate == "links-bytes":
            return sum(len(link.name.encode()) + len(bytes(link.cid)) for link in node.links if link.name)
        return len(node.encode())

    def _shard(self, items: list[tuple[str, Entry, bytes]], depth: int) -> Entry:
        slots: dict[int, list[tuple[str, Entry, bytes]]] = {}
        for item in items:
            slots.setdefault(item[2][depth], []).append(item)
        links = []
        for slot in sorted(slots):
            group = slots[slot]
            label = f"{slot:02X}"
            if len(group) == 1:
                name, entry, _ = group[0]
                links.append(Link(entry.cid, label + name, entry.size))
            else:
                sub = self._shard(group, depth + 1)
                links.append(Link(sub.cid, label, sub.size))
        bitmap = sum(1 << s for s in slots)
        # the bitfield is the bitmap as a minimal big-endian integer (go's big.Int.Bytes)
        data = UnixFSData(HAMT_SHARD, data=bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "big"),
                          hash_type=MURMUR3_X64_64,
                          fanout=self.profile.fanout).encode()
        cid, n = self._node(Node(tuple(links), data))
        return Entry(cid, n + sum(link.tsize or 0 for link in links), is_dir=True)

    def tree(self, tree: Tree) -> Entry:
        children: dict[str, Entry] = {}
        for name, value in tree.items():
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"bad entry name {name!r}")
            if isinstance(value, Entry):
                children[name] = value
            elif isinstance(value, dict):
                children[name] = self.tree(value)
            elif isinstance(value, Path):
                children[name] = self.file_at(value)
            else:
                children[name] = self.file(value)
        return self.directory(children)


def cid_of_file(data: bytes, profile: Profile = V1_2025) -> CID:
    return Importer(profile, lambda cid, block: None).file(data).cid


def cid_of_tree(tree: Tree, profile: Profile = V1_2025) -> CID:
    return Importer(profile, lambda cid, block: None).tree(tree).cid
