"""CARv1 (https://ipld.io/specs/transport/car/carv1/): a dag-cbor header {roots, version: 1}, then
sections of varint(len(cid)+len(block)) ‖ cid ‖ block. Writing streams; reading verifies each block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from pipeline.export.ipfs.multiformats import CID, CIDError, read_varint, varint


class CARError(ValueError):
    pass


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    if n < 65536:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def header(roots: list[CID]) -> bytes:
    """The dag-cbor header: map keys in length-first order ("roots" before "version"); CIDs as tag 42."""
    body = _cbor_head(5, 2) + _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for cid in roots:
        raw = b"\0" + bytes(cid)
        body += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return varint(len(body)) + body


def section(cid: CID, block: bytes) -> bytes:
    """One data section: varint(len(cid) + len(block)) ‖ cid ‖ block."""
    key = bytes(cid)
    return varint(len(key) + len(block)) + key + block


def write(out: BinaryIO, roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CAR; each CID once, in the order given. Returns bytes written."""
    n = out.write(header(roots))
    seen: set[bytes] = set()
    for cid, block in blocks:
        key = bytes(cid)
        if key in seen:
            continue
        seen.add(key)
        n += out.write(section(cid, block))
    return n


def read(data: bytes) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Parse a CAR; the iterator raises :class:`CARError` on a block that does not match its CID."""
    try:
        hlen, pos = read_varint(data, 0)
    except CIDError as e:
        raise CARError(f"bad header length: {e}") from None
    head = data[pos:pos + hlen]
    expected_prefix = _cbor_head(5, 2) + _cbor_head(3, 5) + b"roots"
    if not head.startswith(expected_prefix) or not head.endswith(_cbor_head(3, 7) + b"version\x01"):
        raise CARError("not a CARv1 header with roots and version 1")
    roots = []
    i = len(expected_prefix)
    count = head[i] & 0x1F
    i += 1
    for _ in range(count):
        if head[i:i + 2] != b"\xd8\x2a":
            raise CARError("root is not a CID (tag 42)")
        length = head[i + 3] if head[i + 2] == 0x58 else head[i + 2] & 0x1F
        start = i + (4 if head[i + 2] == 0x58 else 3)
        roots.append(CID.from_bytes(head[start + 1:start + length]))
        i = start + length
    pos += hlen

    def blocks() -> Iterator[tuple[CID, bytes]]:
        p = pos
        while p < len(data):
            length, q = read_varint(data, p)
            cid, r = CID.read(data, q)
            block = data[r:q + length]
            if len(block) != q + length - r:
                raise CARError("truncated section")
            if hashlib.sha256(block).digest() != cid.digest:
                raise CARError(f"block {cid} does not match its CID")
            yield cid, block
            p = q + length

    return roots, blocks()
