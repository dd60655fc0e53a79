"""Errors that name what went wrong and where; each maps to an exit status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class WheelproofError(Exception):
    """Base error: printed as one message, exits with ``exit_status``."""

    exit_status = 1


@dataclass(frozen=True)
class Problem:
    """One problem in one input file, located by line and field."""

    path: Path | str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class DeclarationError(WheelproofError):
    """Every problem found while loading declarations, reported at once (exit 2)."""

    exit_status = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StoreError(WheelproofError):
    """The store is unusable or an object failed verification."""


class IntegrityError(StoreError):
    """Bytes read back do not hash to their address."""


class FetchError(WheelproofError):
    """A fixed-output download failed or did not match its pin."""


class SandboxError(WheelproofError):
    """No sandbox is available, or the sandbox refused to start."""


class IndexError_(WheelproofError):
    """The package index did not give what ``declare`` needs."""
