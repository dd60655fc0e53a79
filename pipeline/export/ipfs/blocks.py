"""Where a DAG's blocks come from: anything that answers ``has`` and ``read_bytes`` by SHA-256.

A CID's sha2-256 multihash digest names the block (https://github.com/multiformats/cid), so the
local store (:class:`pipeline.store.local.Store`, which re-hashes every read) and a client that
fetches trustless ``?format=raw`` answers from an untrusted gateway and verifies them
(:mod:`pipeline.client.source`) are both block sources for :class:`~pipeline.export.ipfs.gateway.DagReader`.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["BlockSource"]


class BlockSource(Protocol):
    """Blocks by the hex SHA-256 of their bytes; ``read_bytes`` must return only verified bytes."""

    def has(self, digest: str) -> bool: ...

    def read_bytes(self, digest: str) -> bytes: ...
