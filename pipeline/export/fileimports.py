"""A stored file's UnixFS import (https://specs.ipfs.tech/unixfs/, IPIP-499 profiles), cached by its SHA-256.

Importing a 1 GB set hashes every byte: each chunk becomes a block named by its SHA-256. A file's
import depends only on its bytes and the profile, so :class:`FileImports` keeps the resulting
:class:`~pipeline.export.ipfs.unixfs.Entry` (CID, Tsize, file size) and the digests of its blocks in a
:class:`~pipeline.export.derived.DerivedCache` keyed by the object's SHA-256 and the profile's name. A
hit costs one small verified read and a ``stat`` per block (every block must still be in the store,
else the file is imported again); the CID is the one the importer gave, so the snapshot's root CID is
exactly what a full import computes.

With ``store_blocks=False`` only the CID is wanted (the ``unixfs-v0-2015`` content-id of a wheel): no
block is stored and none is checked.
"""

from __future__ import annotations

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.ipfs.multiformats import CID
from pipeline.export.ipfs.unixfs import Entry, Importer, Profile
from pipeline.store.local import Store

__all__ = ["FileImports"]


class FileImports:
    """The UnixFS :class:`Entry` of store objects under one profile, imported once per content."""

    def __init__(self, store: Store, profile: Profile, store_blocks: bool = True):
        self.store = store
        self.profile = profile
        self.store_blocks = store_blocks
        self.cache = DerivedCache(store, "unixfs-files" if store_blocks else "unixfs-cids")
        self.hits = 0
        self.misses = 0

    def entry(self, sha256: str) -> Entry:
        key = key_of("unixfs-file", self.profile.name, sha256)
        doc = self.cache.get(key)
        if doc is not None:
            entry = self._from_doc(doc)
            if entry is not None:
                self.hits += 1
                return entry
        self.misses += 1
        blocks: list[str] = []

        def put(cid: CID, block: bytes) -> None:
            if self.store_blocks:
                blocks.append(cid.hex_digest)
                if not self.store.has(cid.hex_digest):
                    self.store.put_bytes(block)

        with self.store.shared():
            entry = Importer(self.profile, put).file_at(self.store.verified_path(sha256))
            self.cache.put(key, {"cid": str(entry.cid), "size": entry.size, "filesize": entry.filesize,
                                 "references": sorted(set(blocks))})
        return entry

    def _from_doc(self, doc: dict[str, object]) -> Entry | None:
        cid, size, filesize, refs = doc.get("cid"), doc.get("size"), doc.get("filesize"), doc.get("references")
        if not (isinstance(cid, str) and isinstance(size, int) and isinstance(filesize, int)
                and isinstance(refs, list)):
            return None
        if self.store_blocks and not (refs and all(isinstance(d, str) and self.store.has(d) for d in refs)):
            return None
        try:
            parsed = CID.parse(cid)
        except ValueError:
            return None
        if self.store_blocks and parsed.hex_digest not in refs:
            return None
        return Entry(parsed, size, filesize)
