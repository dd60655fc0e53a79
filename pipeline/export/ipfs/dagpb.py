"""dag-pb (PBNode/PBLink) and UnixFS Data protobufs: encode canonically, decode strictly.

Canonical dag-pb puts Links (field 2) before Data (field 1); a link encodes Hash, Name, Tsize in
that order. UnixFS Data fields: Type(1) Data(2) filesize(3) blocksizes(4, repeated, not packed)
hashType(5) fanout(6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.export.ipfs.multiformats import CID, CIDError, read_varint, varint

RAW, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = range(6)


class DagPBError(ValueError):
    pass


def _field(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2) + varint(len(value)) + value


@dataclass(frozen=True)
class Link:
    cid: CID
    name: str | None
    tsize: int | None

    def encode(self) -> bytes:
        out = _bytes_field(1, bytes(self.cid))
        if self.name is not None:
            out += _bytes_field(2, self.name.encode())
        if self.tsize is not None:
            out += _field(3, 0) + varint(self.tsize)
        return out


@dataclass(frozen=True)
class Node:
    links: tuple[Link, ...] = ()
    data: bytes | None = None

    def encode(self) -> bytes:
        out = b"".join(_bytes_field(2, link.encode()) for link in self.links)
        if self.data is not None:
            out += _bytes_field(1, self.data)
        return out


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    try:
        while pos < len(buf):
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = read_varint(buf, pos)
                out.append((number, wire, value))
            elif wire == 2:
                length, pos = read_varint(buf, pos)
                if pos + length > len(buf):
                    raise DagPBError("truncated length-delimited field")
                out.append((number, wire, buf[pos:pos + length]))
                pos += length
            else:
                raise DagPBError(f"unsupported wire type {wire}")
    except CIDError as e:
        raise DagPBError(str(e)) from None
    return out


def decode(block: bytes) -> Node:
    links, data = [], None
    for number, wire, value in _fields(block):
        if number == 2 and wire == 2:
            assert isinstance(value, bytes)
            cid, name, tsize = None, None, None
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    assert isinstance(v, bytes)
                    try:
                        cid = CID.from_bytes(v)
                    except CIDError as e:
                        raise DagPBError(f"bad link CID: {e}") from None
                elif n == 2 and w == 2:
                    assert isinstance(v, bytes)
                    name = v.decode("utf-8")
                elif n == 3 and w == 0:
                    assert isinstance(v, int)
                    tsize = v
                else:
                    raise DagPBError(f"unexpected PBLink field {n}")
            if cid is None:
                raise DagPBError("PBLink without Hash")
            links.append(Link(cid, name, tsize))
        elif number == 1 and wire == 2:
            assert isinstance(value, bytes)
            data = value
        else:
            raise DagPBError(f"unexpected PBNode field {number}")
    return Node(tuple(links), data)


@dataclass
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    hash_type: int | None = None
    fanout: int | None = None

    def encode(self) -> bytes:
        out = _field(1, 0) + varint(self.type)
        if self.data:
            out += _bytes_field(2, self.data)
        if self.filesize is not None:
            out += _field(3, 0) + varint(self.filesize)
        for size in self.blocksizes:
            out += _field(4, 0) + varint(size)
        if self.hash_type is not None:
            out += _field(5, 0) + varint(self.hash_type)
        if self.fanout is not None:
            out += _field(6, 0) + varint(self.fanout)
        return out

    @classmethod
    def decode(cls, buf: bytes) -> UnixFSData:
        d = cls(type=-1)
        for number, _wire, value in _fields(buf):
            if number == 1 and isinstance(value, int):
                d.type = value
            elif number == 2 and isinstance(value, bytes):
                d.data = value
            elif number == 3 and isinstance(value, int):
                d.filesize = value
            elif number == 4 and isinstance(value, int):
                d.blocksizes.append(value)
            elif number == 5 and isinstance(value, int):
                d.hash_type = value
            elif number == 6 and isinstance(value, int):
                d.fanout = value
            # mode (7) and mtime (8) are allowed and ignored
        if d.type not in range(6):
            raise DagPBError(f"not UnixFS data (type {d.type})")
        return d
