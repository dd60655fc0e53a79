"""What the coordinator shows while a farm works: done / running / queued / failed of N, per worker.

On a terminal the line is redrawn in place (``\\r`` and erase-to-end-of-line); otherwise a line is
printed whenever a node finishes, so logs stay readable. :meth:`Progress.summary` is printed at the end:
wall time, per-worker counts, retries (a node started again after its worker died) and rejections.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["QUEUED", "RUNNING", "DONE", "FAILED", "Progress"]

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass
class Progress:
    out: TextIO = field(default_factory=lambda: sys.stderr)
    in_place: bool | None = None  # default: when ``out`` is a terminal
    started_at: float = field(default_factory=time.monotonic)
    state: dict[str, str] = field(default_factory=dict)
    worker_of: dict[str, str] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    done_by: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    cached: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        if self.in_place is None:
            self.in_place = self.out.isatty()

    def submitted(self, key: str) -> None:
        with self._lock:
            self.state[key] = QUEUED
            self._show(False)

    def started(self, key: str, worker: str) -> None:
        with self._lock:
            if self.state.get(key) not in (QUEUED, RUNNING):
                return  # a late event for a node already finished
            self.starts[key] += 1
            self.state[key], self.worker_of[key] = RUNNING, worker
            self._show(False)

    def finished(self, key: str, worker: str, ok: bool, *, rejected: bool = False, cached: bool = False) -> None:
        with self._lock:
            self.state[key] = DONE if ok else FAILED
            if worker:
                self.worker_of[key] = worker
                self.done_by[worker] += 1
            self.rejected += rejected
            self.cached += cached
            self._show(True)

    @property
    def retries(self) -> int:
        return sum(n - 1 for n in self.starts.values() if n > 1)

    def line(self) -> str:
        counts = Counter(self.state.values())
        head = (f"farm: {counts[DONE]} done, {counts[RUNNING]} running, {counts[QUEUED]} queued, "
                f"{counts[FAILED]} failed of {len(self.state)}")
        workers = sorted(set(self.worker_of.values()))
        per = [f"{w}: {self.done_by[w]} done" + (f", {r} running" if (r := sum(
            1 for k, s in self.state.items() if s == RUNNING and self.worker_of.get(k) == w)) else "")
            for w in workers]
        return " | ".join([head, *per])

    def summary(self) -> str:
        counts = Counter(self.state.values())
        wall = time.monotonic() - self.started_at
        per = ", ".join(f"{w} {n}" for w, n in sorted(self.done_by.items())) or "none"
        return (f"farm: {len(self.state)} node(s) in {wall:.1f}s: {counts[DONE]} done, {counts[FAILED]} failed "
                f"({self.rejected} rejected), {counts[RUNNING] + counts[QUEUED]} unfinished; per worker: {per}; "
                f"retries {self.retries}; {self.cached} from a worker's cache")

    def _show(self, finished: bool) -> None:
        if self.in_place:
            self.out.write("\r\x1b[K" + self.line())
            self.out.flush()
        elif finished:
            print(self.line(), file=self.out, flush=True)

    def close(self) -> None:
        with self._lock:
            if self.in_place:
                self.out.write("\n")
            if self.state:
                print(self.summary(), file=self.out, flush=True)
