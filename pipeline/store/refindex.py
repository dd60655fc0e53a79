"""An index of which refs point at a finished record, so an up-to-date check reads one file.

``doit build`` over 10,000 built derivations would otherwise read and decompress 10,000 records just
to learn that nothing needs doing. The index maps each ref of one kind to the digest it pointed at and
whether that record counts as done; it is derived data (``<store>/cache/refs-<kind>.json``), rebuilt
from the refs whenever they may have changed:

- the ref directory's mtime is unchanged since the index was written (any ref added or replaced
  renames a file into that directory, which changes it), and
- that mtime was not "racy" (as git's index calls it): not within :data:`RACY_SECONDS` of the moment
  the directory was scanned, when another write could still land with the same timestamp.

Otherwise every ref is re-read, and only records whose digest changed are classified again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.model.errors import WheelproofError
from pipeline.store.local import HEX64, Store, atomic_write

__all__ = ["RACY_SECONDS", "RefIndex"]

RACY_SECONDS = 2.0
_FORMAT = 1


@dataclass
class _State:
    dir_mtime_ns: int
    racy: bool
    entries: dict[str, tuple[str, bool]]


class RefIndex:
    """``done(name)``: the ref ``<kind>/<name>`` points at a record ``classify`` accepts."""

    def __init__(self, store: Store, kind: str, classify: Callable[[str, str], bool]):
        self.store, self.kind, self.classify = store, kind, classify
        self.directory = store.refs / kind
        self.path = store.root / "cache" / f"refs-{kind}.json"
        self._state: _State | None = None

    def done(self, name: str) -> bool:
        entry = self._load().entries.get(name)
        return entry is not None and entry[1]

    def invalidate(self) -> None:
        self._state = None

    def _load(self) -> _State:
        if self._state is None:
            self._state = self._refresh(self._read_cached())
        return self._state

    def _read_cached(self) -> _State | None:
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("format") != _FORMAT:
                return None
            entries = {k: (d, bool(ok)) for k, (d, ok) in doc["entries"].items() if HEX64.match(d)}
            return _State(int(doc["dir_mtime_ns"]), bool(doc["racy"]), entries)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: derived data, rebuilt below

    def _refresh(self, cached: _State | None) -> _State:
        scanned_ns = time.time_ns()
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return _State(0, False, {})
        if cached is not None and not cached.racy and cached.dir_mtime_ns == mtime:
            return cached
        old = cached.entries if cached is not None else {}
        entries: dict[str, tuple[str, bool]] = {}
        for ref in os.scandir(self.directory):
            digest = self.store.get_ref(self.kind, ref.name)
            if digest is None:
                continue
            prior = old.get(ref.name)
            entries[ref.name] = prior if prior and prior[0] == digest else (digest, self._classify(ref.name, digest))
        state = _State(mtime, mtime >= scanned_ns - int(RACY_SECONDS * 1e9), entries)
        doc = {"format": _FORMAT, "dir_mtime_ns": state.dir_mtime_ns, "racy": state.racy,
               "entries": {k: list(v) for k, v in sorted(entries.items())}}
        try:
            atomic_write(self.path, json.dumps(doc, separators=(",", ":")).encode())
        except OSError:
            pass  # a read-only store still answers, only more slowly next time
        return state

    def _classify(self, name: str, digest: str) -> bool:
        try:
            return self.classify(name, digest)
        except WheelproofError:
            return False  # a record that does not verify is not done: the node runs again
