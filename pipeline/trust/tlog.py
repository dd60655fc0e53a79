"""A transparency log: an RFC 6962 Merkle tree over entries, stored as C2SP tlog-tiles.

Hashes (RFC 6962 §2.1): leaf = SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right).
Inclusion and consistency proofs are generated with RFC 6962's PATH and SUBPROOF and verified with
RFC 9162 §2.1.3.2 and §2.1.4.2. Tiles (https://c2sp.org/tlog-tiles): ``tile/<L>/<N>`` holds 256
hashes of tree level 8·L, a partial rightmost tile is ``tile/<L>/<N>.p/<W>``; entry bundles are
``tile/entries/<N>[.p/<W>]`` (each entry prefixed by its big-endian uint16 length); N is written in
groups of three digits, all but the last prefixed with ``x``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from pipeline.store.local import atomic_write

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 6962 §2.1); the empty tree hashes the empty string."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:  # pairing left to right gives MTH's left-heavy shape
        level = [node_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 6962 §2.1.1)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"index {index} outside a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof(index, leaves[:k]) + [root(leaves[k:])]
    return inclusion_proof(index - k, leaves[k:]) + [root(leaves[:k])]


def consistency_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 6962 §2.1.2)."""
    n = len(leaves)
    if not 0 < m <= n:
        raise ValueError(f"no consistency proof from size {m} to {n}")

    def subproof(m: int, d: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if complete else [root(d)]
        k = _split(n)
        if m <= k:
            return subproof(m, d[:k], complete) + [root(d[k:])]
        return subproof(m - k, d[k:], False) + [root(d[:k])]

    return subproof(m, leaves, True)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if m > n or m == 0:
        return False
    if m == n:
        return not proof and old_root == new_root
    path = list(proof)
    if m & (m - 1) == 0:  # m is a power of two: the old root is the first node
        path = [old_root] + path
    if not path:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# -- C2SP tlog-tiles on disk ---------------------------------------------------------------------

def tile_index_path(n: int) -> str:
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    while len(groups) > 1 and groups[0] == "000":
        groups.pop(0)
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


def tile_path(level: int | str, n: int, width: int) -> str:
    suffix = f".p/{width}" if width < TILE_WIDTH else ""
    return f"tile/{level}/{tile_index_path(n)}{suffix}"


def write_tiles(log_dir: Path, entries: Sequence[bytes]) -> bytes:
    """(Re)write every tile and entry bundle for ``entries``; returns the tree's root hash."""
    n = len(entries)
    for start in range(0, n, TILE_WIDTH):
        chunk = entries[start:start + TILE_WIDTH]
        bundle = b"".join(len(e).to_bytes(2, "big") + e for e in chunk)
        atomic_write(log_dir / tile_path("entries", start // TILE_WIDTH, len(chunk)), bundle)
    level_hashes = [leaf_hash(e) for e in entries]
    level = 0
    while level_hashes:
        for start in range(0, len(level_hashes), TILE_WIDTH):
            chunk = level_hashes[start:start + TILE_WIDTH]
            atomic_write(log_dir / tile_path(level, start // TILE_WIDTH, len(chunk)), b"".join(chunk))
        # the next tile level holds the roots of complete tiles only
        level_hashes = [root(level_hashes[i:i + TILE_WIDTH])
                        for i in range(0, len(level_hashes) - TILE_WIDTH + 1, TILE_WIDTH)]
        level += 1
    return root([leaf_hash(e) for e in entries])


def read_entries(log_dir: Path, size: int) -> list[bytes]:
    """Entries 0..size-1 from the entry bundles."""
    out: list[bytes] = []
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, size - n * TILE_WIDTH)
        path = log_dir / tile_path("entries", n, width)
        if not path.is_file():  # a full tile written by a later, larger tree
            path = log_dir / tile_path("entries", n, TILE_WIDTH)
        data = path.read_bytes()
        pos = 0
        while pos < len(data) and len(out) < min(size, (n + 1) * TILE_WIDTH):
            length = int.from_bytes(data[pos:pos + 2], "big")
            out.append(data[pos + 2:pos + 2 + length])
            pos += 2 + length
    if len(out) != size:
        raise ValueError(f"the log holds {len(out)} entries, the checkpoint says {size}")
    return out
