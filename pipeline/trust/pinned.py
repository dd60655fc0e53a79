"""A pinned checkpoint: the newest signed log checkpoint one party (the publisher, or a verifier) has
seen, kept on that party's side, outside the release directory an attacker may write.

It plays the part of a TUF client's trusted metadata (TUF specification §5, rollback and freeze
attacks) or a C2SP tlog witness's state: a log is accepted only if it extends the pinned checkpoint
(:func:`pipeline.trust.checkpoint.require_extends`), and the pin moves forward only after a fully
successful publish or verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.store.local import atomic_write
from pipeline.trust.checkpoint import Checkpoint, HistoryError, ReleaseError
from pipeline.trust.signing import PublicKey, SignatureError, verify_note

__all__ = ["PinnedCheckpoint"]


@dataclass(frozen=True)
class PinnedCheckpoint:
    """The file holding a signed checkpoint note (C2SP signed-note) one party saw last."""

    path: Path

    def load(self, public: PublicKey, origin: str) -> Checkpoint | None:
        """The pinned checkpoint, its signature checked; None if nothing was pinned yet."""
        try:
            note = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise ReleaseError(f"{self.path}: cannot read the pinned checkpoint: {e}") from None
        try:
            return Checkpoint.parse(verify_note(public, origin, note))
        except (SignatureError, ReleaseError) as e:
            raise HistoryError(f"{self.path}: the pinned checkpoint is not a checkpoint of log {origin} signed by "
                               f"key {public.key_id_hex}: {e}") from None

    def note(self) -> str | None:
        return self.path.read_text() if self.path.is_file() else None

    def save(self, note: str) -> None:
        atomic_write(self.path, note.encode())
