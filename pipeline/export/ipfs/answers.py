"""Serialized answers of immutable content, remembered by request, bounded in bytes and entries.

Everything under ``/ipfs/<cid>/…`` is immutable (the path gateway spec sends it with ``Cache-Control:
public, max-age=29030400, immutable``, https://specs.ipfs.tech/http-gateways/path-gateway/#cache-control-response-header),
so the answer to the same request never changes: a server may remember the bytes it sent, as any cache
may store a response marked ``immutable`` (RFC 8246, RFC 9111 §3). An answer is remembered only if
all of these hold:

- it says ``Cache-Control: public, max-age=29030400, immutable`` (never a 404 for a block not in the
  store yet, the snapshot list, an error or a 503: those say ``no-cache``);
- its body is bytes already in memory (read from blocks verified once, see
  :class:`pipeline.export.ipfs.blocks.VerifiedBlocks`) and at most ``max_body`` long;

and it is found again only by the same request: method, target exactly as sent, the values of every
header :func:`~pipeline.export.ipfs.respond.respond` reads (:data:`~pipeline.export.ipfs.respond.REQUEST_HEADERS`),
and the framing the server chose (keep-alive, HTTP/1.0). The ``Date`` header (RFC 9110 §6.6.1) is left
out of what is stored and spliced in when the answer is sent. Least recently used entries go first when
the bytes (keys included) pass ``max_bytes`` or the entries pass ``max_entries``, so a client cycling
through distinct targets costs the cache its hits, never the server its memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["AnswerCache", "CachedAnswer", "Key"]

Key = tuple[str | None, ...]  # method, target, framing, then REQUEST_HEADERS values (None: absent)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The bytes of one answer around its ``Date`` value: ``before + date + after``."""

    before: bytes
    after: bytes

    def render(self, date: bytes) -> bytes:
        return self.before + date + self.after


class AnswerCache:
    """A bounded LRU of :class:`CachedAnswer` by request :data:`Key`."""

    def __init__(self, max_bytes: int = 32 << 20, max_entries: int = 4096, max_body: int = 64 << 10):
        self.max_bytes, self.max_entries, self.max_body = max_bytes, max_entries, max_body
        self._entries: OrderedDict[Key, tuple[CachedAnswer, int]] = OrderedDict()
        self.held = 0  # bytes of answers and keys held
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Key, answer: CachedAnswer) -> None:
        cost = len(answer.before) + len(answer.after) + sum(len(k) for k in key if k) + 200  # + per-entry overhead
        if cost > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (answer, cost)
        self.held += cost
        while self.held > self.max_bytes or len(self._entries) > self.max_entries:
            _, (_, old) = self._entries.popitem(last=False)
            self.held -= old
