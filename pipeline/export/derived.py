"""Derived results cached by content, so a snapshot costs what changed.

A snapshot derives things from content that never changes under its name: a wheel's UnixFS import
(by the wheel's SHA-256 and the IPIP-499 profile), a wheel's conda package (by the wheel's SHA-256,
the converter's versions and the name mapping), the channel's repodata (by the packages' digests), a
CAR's checked size and hash, a torrent (by the root CID and web seed). Each result is a JSON document
stored as an object (so every read of it is verified by its hash, as every store read is) and found
through a pointer file ``<store>/cache/<kind>/<key>`` that holds the document's digest.

The pointers are not gc roots: ``gc`` may remove a document or the blocks it lists, and the next
lookup then misses (a dangling pointer, a missing block, a document for another key are all misses)
and the result is derived again. Nothing here is trusted beyond what the store already is: the
document is re-hashed on read and must name the key it was asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import zstandard

from pipeline.model.errors import IntegrityError, StoreError
from pipeline.store.local import HEX64, Store, atomic_write

__all__ = ["DerivedCache", "key_of"]

_KIND = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")


def key_of(*parts: Any) -> str:
    """A cache key: the SHA-256 of the parts as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DerivedCache:
    """``<store>/cache/<kind>/<key>`` → a verified JSON document that names ``key``."""

    def __init__(self, store: Store, kind: str):
        if not _KIND.fullmatch(kind):
            raise ValueError(f"bad cache kind {kind!r}")
        self.store = store
        self.kind = kind
        self.dir = store.root / "cache" / kind

    def get(self, key: str) -> dict[str, Any] | None:
        """The document cached for ``key``; None if absent, dangling, corrupt or another key's."""
        if not HEX64.match(key):
            raise ValueError(f"bad cache key {key!r}")
        try:
            digest = (self.dir / key).read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        if not HEX64.match(digest) or not self.store.has(digest):
            return None
        try:
            doc = self.store.read_json(digest)
        except (IntegrityError, StoreError, ValueError, zstandard.ZstdError):
            return None
        if not isinstance(doc, dict) or doc.get("cache") != self.kind or doc.get("key") != key:
            return None
        return doc

    def put(self, key: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Store ``doc`` (adding its kind and key) and point ``key`` at it, atomically."""
        if not HEX64.match(key):
            raise ValueError(f"bad cache key {key!r}")
        full = {**doc, "cache": self.kind, "key": key}
        digest = self.store.put_json(full)
        atomic_write(self.dir / key, (digest + "\n").encode())
        return full
