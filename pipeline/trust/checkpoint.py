"""Log checkpoints (C2SP tlog-checkpoint: origin, tree size, base64 root hash) and the rule every
party applies to a log it has seen before: the new tree must extend the old one (RFC 6962 §2.1.2:
the first ``old.size`` entries hash to ``old.root``), else the history was deleted, rolled back or
forked.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.errors import WheelproofError
from pipeline.trust import tlog

__all__ = ["Checkpoint", "HistoryError", "ReleaseError", "require_extends"]


class ReleaseError(WheelproofError):
    """A release, its manifest or its log failed a check."""


class HistoryError(ReleaseError):
    """The log does not extend a checkpoint signed before: deleted, rolled back or forked."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        try:
            return cls(lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True))
        except (IndexError, ValueError):
            raise ReleaseError("malformed checkpoint") from None


def require_extends(pinned: Checkpoint, pinned_from: Path, current: Checkpoint | None,
                    entries: Sequence[bytes], log_dir: Path) -> None:
    """Raise :class:`HistoryError` unless ``current`` (whose ``entries`` hash to its root) extends ``pinned``."""
    if current is None:
        raise HistoryError(f"the log was deleted: {log_dir / 'checkpoint'} is missing, but {pinned_from} holds "
                           f"a checkpoint of size {pinned.size} signed earlier (restore the log from a mirror)")
    if current.size < pinned.size:
        raise HistoryError(f"the log was rolled back: {log_dir / 'checkpoint'} has size {current.size}, but "
                           f"{pinned_from} holds a checkpoint of size {pinned.size} signed earlier")
    if tlog.root([tlog.leaf_hash(e) for e in entries[:pinned.size]]) != pinned.root:
        raise HistoryError(f"the log forked: its first {pinned.size} entries do not hash to the root of the "
                           f"checkpoint in {pinned_from} (history was rewritten)")
