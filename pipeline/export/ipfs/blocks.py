"""Where a DAG's blocks come from: anything that answers ``has`` and ``read_bytes`` by SHA-256.

A CID's sha2-256 multihash digest names the block (https://github.com/multiformats/cid), so the
local store (:class:`pipeline.store.local.Store`, which re-hashes every read) and a client that
fetches trustless ``?format=raw`` answers from an untrusted gateway and verifies them
(:mod:`pipeline.client.source`) are both block sources for :class:`~pipeline.export.ipfs.dag.DagReader`.

:class:`VerifiedBlocks` wraps a source for a long-running server: a block is content-addressed and
never changes, so once it has hashed to its CID it is remembered as verified (its digest in a bounded
set, small blocks' bytes in a bounded LRU) and is not re-hashed on the next read. Where the source is
the local store, a verified raw leaf can also be handed out as a file path (for ``sendfile``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["BlockFiles", "BlockSource", "VerifiedBlocks"]


class BlockSource(Protocol):
    """Blocks by the hex SHA-256 of their bytes; ``read_bytes`` must return only verified bytes."""

    def has(self, digest: str) -> bool: ...

    def read_bytes(self, digest: str) -> bytes: ...


@runtime_checkable
class BlockFiles(Protocol):
    """A source whose blocks are files (the local store): ``verified_path`` hashes before answering."""

    def verified_path(self, digest: str) -> Path: ...


class VerifiedBlocks:
    """A :class:`BlockSource` that verifies each block once (through ``source``) and remembers it.

    ``cache_bytes`` bounds the bytes kept of blocks no larger than ``max_cached_block``;
    ``max_verified`` bounds the remembered digests (the oldest are forgotten, then re-verified)."""

    def __init__(self, source: BlockSource, cache_bytes: int = 64 << 20, max_cached_block: int = 256 << 10,
                 max_verified: int = 1 << 20):
        self.source = source
        self.cache_bytes = cache_bytes
        self.max_cached_block = max_cached_block
        self.max_verified = max_verified
        self._blocks: OrderedDict[str, bytes] = OrderedDict()
        self._held = 0
        self._verified: OrderedDict[str, Path | None] = OrderedDict()
        self._lock = threading.Lock()
        self.hashed = 0  # blocks hashed so far (a test and the benchmark read it)

    def has(self, digest: str) -> bool:
        return digest in self._verified or self.source.has(digest)

    def cached(self, digest: str) -> bool:
        return digest in self._blocks

    def _remember(self, digest: str, path: Path | None) -> None:
        with self._lock:
            self._verified[digest] = path
            self._verified.move_to_end(digest)
            while len(self._verified) > self.max_verified:
                self._verified.popitem(last=False)

    def read_bytes(self, digest: str) -> bytes:
        with self._lock:
            block = self._blocks.get(digest)
            if block is not None:
                self._blocks.move_to_end(digest)
                return block
        if digest in self._verified and isinstance(self.source, BlockFiles) and self._verified[digest]:
            path = self._verified[digest]
            assert path is not None
            block = path.read_bytes()  # verified before and immutable since
        else:
            block = self.source.read_bytes(digest)  # verifies (IntegrityError if corrupt)
            self.hashed += 1
            self._remember(digest, None if not isinstance(self.source, BlockFiles) else self._path(digest))
        if len(block) <= self.max_cached_block:
            with self._lock:
                if digest not in self._blocks:
                    self._blocks[digest] = block
                    self._held += len(block)
                    while self._held > self.cache_bytes and self._blocks:
                        _, old = self._blocks.popitem(last=False)
                        self._held -= len(old)
        return block

    def _path(self, digest: str) -> Path | None:
        object_path = getattr(self.source, "object_path", None)
        return Path(object_path(digest)) if object_path else None

    def verified_file(self, digest: str) -> Path | None:
        """The block as a verified file (hashed the first time only), or None if the source has no files."""
        if not isinstance(self.source, BlockFiles):
            return None
        path = self._verified.get(digest)
        if path is not None:
            return path
        path = self.source.verified_path(digest)  # hashes; IntegrityError if corrupt
        self.hashed += 1
        self._remember(digest, path)
        return path
