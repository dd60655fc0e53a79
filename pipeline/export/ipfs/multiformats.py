"""CIDs (v0 and v1), unsigned varints, multibase (base32 lower, base58btc) and sha2-256 multihashes.

Only what UnixFS needs: codecs dag-pb (0x70) and raw (0x55), hash sha2-256 (0x12, 32 bytes).
Parsing is strict: every malformed string raises :class:`CIDError` naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


class CIDError(ValueError):
    """A CID string or byte string that is not valid for this store."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(value, next position); rejects truncated and over-long (non-minimal) encodings."""
    value, shift, start = 0, 0, pos
    while True:
        if pos >= len(data):
            raise CIDError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if pos - start > 1 and b == 0:
                raise CIDError("varint is not minimally encoded")
            return value, pos
        shift += 7
        if shift > 63:
            raise CIDError("varint too long")


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise CIDError(f"invalid base58btc character {c!r}")
        n = n * 58 + _B58_INDEX[c]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


@dataclass(frozen=True)
class CID:
    version: int
    codec: int
    digest: bytes  # the sha2-256 digest: also the store's object name

    @classmethod
    def of(cls, block: bytes, codec: int, version: int = 1) -> CID:
        if version == 0 and codec != DAG_PB:
            raise CIDError("CIDv0 is dag-pb only")
        return cls(version, codec, hashlib.sha256(block).digest())

    @property
    def multihash(self) -> bytes:
        return bytes([SHA2_256, 32]) + self.digest

    @functools.cached_property
    def binary(self) -> bytes:
        """The binary CID (computed once: CIDs are immutable)."""
        if self.version == 0:
            return self.multihash
        return varint(1) + varint(self.codec) + self.multihash

    @functools.cached_property
    def text(self) -> str:
        """The string form (computed once)."""
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(self.binary).decode().lower().rstrip("=")

    def __bytes__(self) -> bytes:
        return self.binary

    def __str__(self) -> str:
        return self.text

    @property
    def hex_digest(self) -> str:
        return self.digest.hex()

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        cid, end = cls.read(data, 0)
        if end != len(data):
            raise CIDError("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, data: bytes, pos: int) -> tuple[CID, int]:
        """Decode a binary CID at ``pos`` (as in CAR sections and dag-pb links)."""
        if data[pos:pos + 2] == bytes([SHA2_256, 32]):
            digest = data[pos + 2:pos + 34]
            if len(digest) != 32:
                raise CIDError("truncated multihash")
            return cls(0, DAG_PB, digest), pos + 34
        version, pos = read_varint(data, pos)
        if version != 1:
            raise CIDError(f"unsupported CID version {version}")
        codec, pos = read_varint(data, pos)
        if codec not in CODEC_NAMES:
            raise CIDError(f"unsupported codec 0x{codec:x} (only dag-pb and raw)")
        code, pos = read_varint(data, pos)
        length, pos = read_varint(data, pos)
        if code != SHA2_256:
            raise CIDError(f"unsupported multihash 0x{code:x} (only sha2-256)")
        if length != 32:
            raise CIDError(f"sha2-256 digest of length {length}")
        digest = data[pos:pos + 32]
        if len(digest) != 32:
            raise CIDError("truncated multihash")
        return cls(1, codec, digest), pos + 32

    @classmethod
    def parse(cls, text: str) -> CID:
        if not text:
            raise CIDError("empty CID")
        if text.startswith("Qm") and len(text) == 46:
            raw = b58decode(text)
            if raw[:2] != bytes([SHA2_256, 32]) or len(raw) != 34:
                raise CIDError("CIDv0 must be a sha2-256 multihash")
            return cls(0, DAG_PB, raw[2:])
        prefix, body = text[0], text[1:]
        if prefix == "b":
            if body != body.lower() or not body:
                raise CIDError("base32 CIDs are lower case")
            try:
                raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            except (ValueError, binascii.Error) as e:
                raise CIDError(f"invalid base32: {e}") from None
        elif prefix == "z":
            raw = b58decode(body)
        else:
            raise CIDError(f"unsupported multibase prefix {prefix!r} (expected 'b' base32 or 'z' base58btc)")
        cid = cls.from_bytes(raw)
        if cid.version == 0:
            raise CIDError("CIDv0 must be written in base58btc without a multibase prefix")
        return cid
