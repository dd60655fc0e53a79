"""Exceptions to verify-env's findings: a documented TOML file (docs/environment.md) plus ``--allow``.

Format (schema 1)::

    schema = 1

    [[allow]]
    path = "lib/python3.*/site-packages/_virtualenv.pth"   # fnmatch pattern (``*`` crosses ``/``)
    kinds = ["pth-exec", "unknown"]                          # optional; default: every kind
    reason = "uv venv's shim"                                # required: why this is acceptable

A pattern is matched against a finding's subject: a path relative to the environment's prefix (an
absolute path outside it), or ``dist:<name>`` for a distribution. ``--allow PATTERN`` on the command
line is the same with every kind and the reason "command line".
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.errors import DeclarationError, Problem

__all__ = ["KINDS", "Allow", "Allowlist", "load_allow_file"]

KINDS = ("modified", "missing", "unknown", "distribution", "pth-exec", "pth-path", "bad-record", "system-site",
         "install-wrote", "import-wrote", "import-failed")


@dataclass(frozen=True)
class Allow:
    pattern: str
    kinds: tuple[str, ...]  # empty: every kind
    reason: str
    origin: str  # FILE:allow[N] or "--allow"

    def covers(self, kind: str, subject: str) -> bool:
        return (not self.kinds or kind in self.kinds) and fnmatch.fnmatchcase(subject, self.pattern)


@dataclass(frozen=True)
class Allowlist:
    entries: tuple[Allow, ...] = ()

    def match(self, kind: str, subject: str) -> Allow | None:
        return next((a for a in self.entries if a.covers(kind, subject)), None)

    def plus(self, patterns: list[str]) -> Allowlist:
        return Allowlist(self.entries + tuple(Allow(p, (), "command line", "--allow") for p in patterns))


def _line_of(text: str, index: int) -> int | None:
    """The line of the ``index``-th ``[[allow]]`` header (tomllib gives no positions)."""
    seen = -1
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().replace(" ", "") == "[[allow]]":
            seen += 1
            if seen == index:
                return number
    return None


def load_allow_file(path: Path) -> Allowlist:
    """Parse an exceptions file; every problem is reported at once, naming file, line and field (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except OSError as e:
        raise DeclarationError([Problem(path, None, "", str(e))]) from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DeclarationError([Problem(path, None, "", f"not valid TOML: {e}")]) from e
    problems: list[Problem] = []
    if doc.get("schema") != 1:
        problems.append(Problem(path, 1, "schema", "must be 1"))
    for key in sorted(set(doc) - {"schema", "allow"}):
        problems.append(Problem(path, None, key, "unknown key"))
    entries = []
    raw = doc.get("allow", [])
    if not isinstance(raw, list):
        problems.append(Problem(path, None, "allow", "must be an array of tables ([[allow]])"))
        raw = []
    for i, item in enumerate(raw):
        where, line = f"allow[{i}]", _line_of(text, i)
        if not isinstance(item, dict):
            problems.append(Problem(path, line, where, "must be a table"))
            continue
        pattern, kinds, reason = item.get("path"), item.get("kinds", []), item.get("reason")
        if not isinstance(pattern, str) or not pattern:
            problems.append(Problem(path, line, f"{where}.path", "required: a non-empty pattern"))
        if not isinstance(reason, str) or not reason.strip():
            problems.append(Problem(path, line, f"{where}.reason", "required: say why this is acceptable"))
        if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
            problems.append(Problem(path, line, f"{where}.kinds", f"must be a list of: {', '.join(KINDS)}"))
        for key in sorted(set(item) - {"path", "kinds", "reason"}):
            problems.append(Problem(path, line, f"{where}.{key}", "unknown key"))
        if isinstance(pattern, str) and isinstance(reason, str) and isinstance(kinds, list):
            entries.append(Allow(pattern, tuple(kinds), reason, f"{path}:{line or '?'}"))
    if problems:
        raise DeclarationError(problems)
    return Allowlist(tuple(entries))
