"""One file's BitTorrent hashes, made by libtorrent and cached by the file's content.

In a hybrid torrent where every file starts a piece (BEP 52, "Upgrade path": v1 files padded to piece
boundaries with BEP 47 pad files), what the torrent says about a file depends only on its bytes and the
piece length, not on where it sits in the tree:

- BEP 52 (v2): its ``pieces root`` (the root of the SHA-256 Merkle tree over 16 KiB blocks) and, for
  a file longer than one piece, its ``piece layers`` entry;
- BEP 3 (v1): the SHA-1 of each of its pieces, the last one being the file's tail followed by the
  zeros of the pad file after it; only in a one-file torrent (no pad files) is the tail hashed alone.

:func:`file_hashes` has libtorrent hash a file once for each half (a v2-only torrent of the file, a
v1-only torrent of the file and its pad file); :class:`FileHashCache` keeps the result per (file
CID, piece length, libtorrent version) in the derived cache (:mod:`pipeline.export.derived`: a
document stored as an object, read verified), so a snapshot hashes only the files it has not seen.
The torrent is assembled from these by :func:`pipeline.export.torrent.assemble`; libtorrent then loads
it, which checks every piece layer against its pieces root.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.ipfs.multiformats import CID
from pipeline.model.errors import WheelproofError
from pipeline.store.local import Store

__all__ = ["FileHashCache", "FileHashes", "FileHashError", "file_hashes"]

SHA1_SIZE = 20
SHA256_SIZE = 32


class FileHashError(WheelproofError):
    pass


def _pieces(length: int, piece_length: int) -> int:
    return -(-length // piece_length)


@dataclass(frozen=True)
class FileHashes:
    """What a hybrid torrent says about one file of ``length`` bytes (BEP 52 and BEP 3)."""

    length: int
    pieces_root: bytes  # BEP 52 ``pieces root``; b"" for an empty file (it has none)
    layer: bytes        # BEP 52 ``piece layers`` entry; b"" when the file fits in one piece
    v1_pieces: bytes    # SHA-1 of each piece, the last one the file's tail and its zero padding
    v1_tail: bytes      # SHA-1 of the tail alone (a one-file torrent); b"" if the file ends on a boundary

    def check(self, piece_length: int, where: str) -> None:
        """Raise :class:`FileHashError` unless every field has the size BEP 52 and BEP 3 give it."""
        n = _pieces(self.length, piece_length)
        want = {"pieces_root": SHA256_SIZE if self.length else 0,
                "layer": SHA256_SIZE * n if n > 1 else 0,
                "v1_pieces": SHA1_SIZE * n,
                "v1_tail": SHA1_SIZE if self.length % piece_length else 0}
        if self.length < 0:
            raise FileHashError(f"{where}: length {self.length} is negative")
        for name, size in want.items():
            got = len(getattr(self, name))
            if got != size:
                raise FileHashError(f"{where}: {name} has {got} bytes, a {self.length}-byte file has {size}")

    def to_json(self) -> dict[str, Any]:
        return {"length": self.length, "pieces_root": self.pieces_root.hex(), "layer": self.layer.hex(),
                "v1_pieces": self.v1_pieces.hex(), "v1_tail": self.v1_tail.hex()}

    @classmethod
    def from_json(cls, doc: dict[str, Any], piece_length: int, where: str) -> FileHashes:
        try:
            length = doc["length"]
            if not isinstance(length, int) or isinstance(length, bool):
                raise TypeError(f"length is {type(length).__name__}, not an integer")
            out = cls(length, bytes.fromhex(doc["pieces_root"]), bytes.fromhex(doc["layer"]),
                      bytes.fromhex(doc["v1_pieces"]), bytes.fromhex(doc["v1_tail"]))
        except (KeyError, TypeError, ValueError) as e:
            raise FileHashError(f"{where}: not a file's torrent hashes: {e!r}") from e
        out.check(piece_length, where)
        return out


def _generate(lt: Any, entries: list[Any], flags: Any, base: Path, piece_length: int) -> dict[bytes, Any]:
    try:
        ct = lt.create_torrent(entries, piece_length, flags=flags)
        lt.set_piece_hashes(ct, str(base))
    except RuntimeError as e:
        raise FileHashError(f"{base}: libtorrent cannot hash it: {e}") from e
    out: dict[bytes, Any] = ct.generate()
    return out


def file_hashes(path: Path, piece_length: int) -> FileHashes:
    """Hash the file at ``path`` (which the caller has verified) for both halves of a hybrid torrent.

    libtorrent hashes it twice: a v2-only torrent of the file alone gives its pieces root and piece
    layer; a v1-only torrent of ``<dir>/<file>`` followed by its BEP 47 pad file gives the SHA-1s of
    its padded pieces (a pad file is zeros libtorrent never reads). Only the unpadded tail's SHA-1, for
    a one-file torrent, is hashed here (hashlib), from at most one piece of the file."""
    import libtorrent as lt

    length = path.stat().st_size
    if length == 0:
        return FileHashes(0, b"", b"", b"", b"")
    name = path.name
    v2 = _generate(lt, [lt.create_file_entry(name, length, 0, 0, "")], lt.create_torrent.v2_only,
                   path.parent, piece_length)
    try:
        leaf = v2[b"info"][b"file tree"][name.encode()][b""]
        root = bytes(leaf[b"pieces root"])
        layer = bytes(v2.get(b"piece layers", {}).get(root, b""))
        if leaf[b"length"] != length:
            raise FileHashError(f"{path}: libtorrent hashed {leaf[b'length']} bytes, the file has {length}")
    except (KeyError, TypeError) as e:
        raise FileHashError(f"{path}: libtorrent's v2 torrent of it has no pieces root: {e!r}") from e
    entries = [lt.create_file_entry(f"{path.parent.name}/{name}", length, 0, 0, "")]
    tail = length % piece_length
    if tail:
        pad = piece_length - tail
        entries.append(lt.create_file_entry(f"{path.parent.name}/.pad/{pad}", pad,
                                            lt.file_storage.flag_pad_file, 0, ""))
    v1 = _generate(lt, entries, lt.create_torrent.v1_only, path.parent.parent, piece_length)
    v1_tail = b""
    if tail:
        with open(path, "rb") as f:
            f.seek(length - tail)
            v1_tail = hashlib.sha1(f.read(tail)).digest()
    out = FileHashes(length, root, layer, bytes(v1[b"info"][b"pieces"]), v1_tail)
    out.check(piece_length, str(path))
    return out


class FileHashCache:
    """``<store>/cache/torrent-files/<key>``: a file's :class:`FileHashes` by its UnixFS CID (which, like
    a SHA-256, names exactly one content), the piece length and libtorrent's version."""

    def __init__(self, store: Store, piece_length: int):
        self.cache = DerivedCache(store, "torrent-files")
        self.piece_length = piece_length
        self.version = importlib.metadata.version("libtorrent")
        self.hits = 0
        self.misses = 0

    def _key(self, cid: CID) -> str:
        return key_of("torrent-file", str(cid), self.piece_length, self.version)

    def where(self, cid: CID) -> str:
        return f"{self.cache.dir / self._key(cid)} (torrent hashes of {cid})"

    def get(self, cid: CID) -> FileHashes | None:
        doc = self.cache.get(self._key(cid))
        if doc is None:
            return None
        hashes = FileHashes.from_json(doc, self.piece_length, self.where(cid))
        self.hits += 1
        return hashes

    def put(self, cid: CID, hashes: FileHashes) -> None:
        self.misses += 1
        self.cache.put(self._key(cid), hashes.to_json())
