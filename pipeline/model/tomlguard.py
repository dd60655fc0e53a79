"""Reading a reviewed TOML file (TOML 1.0) that may be hostile: bounded before it is parsed.

``tomllib`` is a recursive-descent parser: a few thousand nested ``[`` or ``{`` exhaust Python's
recursion limit. So the raw bytes are first held to a size cap, and the text is scanned for its
bracket depth (outside strings and comments, following TOML's four string forms) before
``tomllib`` sees it; a RecursionError that still happened would be reported the same way.
After parsing, every key and string value is checked for control characters (C0, DEL, C1, and
the Unicode bidirectional overrides of CVE-2021-42574), which TOML escapes can smuggle in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.model import limits
from pipeline.model.errors import Problem

__all__ = ["control_problem", "guarded_loads", "iter_strings", "nesting_problem", "read_bounded"]

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.-]+)\s*=")


def _name(raw: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in raw.split("."))


def read_bounded(path: Path) -> tuple[str | None, Problem | None]:
    """The file's text, or the problem that stops it being read (too big, not UTF-8, unreadable)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limits.MAX_DECLARATION_BYTES + 1)
    except OSError as e:
        return None, Problem(path, None, "", f"cannot read: {e.strerror or e}")
    if len(data) > limits.MAX_DECLARATION_BYTES:
        line = data[: limits.MAX_DECLARATION_BYTES].count(b"\n") + 1
        return None, Problem(path, line, "file size",
                             f"more than the {limits.MAX_DECLARATION_BYTES}-byte limit (not parsed)")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return None, Problem(path, line, "", f"not UTF-8 text at byte {e.start}")


def nesting_problem(path: Path, text: str) -> Problem | None:
    """The first place where arrays/inline tables nest deeper than ``MAX_NESTING``, found without parsing."""
    depth, line, i, n = 0, 1, 0, len(text)
    table, key = "", ""
    at_line_start = True
    while i < n:
        if at_line_start and depth == 0:
            end = text.find("\n", i)
            current = text[i:] if end < 0 else text[i:end]
            if (h := _HEADER.match(current)) and not _KEY.match(current):
                table, key = _name(h.group(1)), ""
            elif k := _KEY.match(current):
                key = _name(k.group(1))
        at_line_start = False
        c = text[i]
        if c == "\n":
            line += 1
            at_line_start = True
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            i, line = _skip_string(text, i, line)
        elif c in "[{":
            depth += 1
            if depth > limits.MAX_NESTING:
                field = ".".join(p for p in (table, key) if p)
                return Problem(path, line, field, f"arrays or inline tables nested more than {limits.MAX_NESTING} "
                                                  "deep (not parsed)")
            i += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
            i += 1
        else:
            i += 1
    return None


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """Index just past the string starting at ``i`` and the line number there."""
    quote = text[i]
    multi = text.startswith(quote * 3, i)
    i += 3 if multi else 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quote == '"':
            if i + 1 < len(text) and text[i + 1] == "\n":
                line += 1
            i += 2
            continue
        if c == "\n":
            if not multi:
                return i, line  # unterminated one-line string: tomllib reports it
            line += 1
        elif c == quote and (not multi or text.startswith(quote * 3, i)):
            if not multi:
                return i + 1, line
            i += 3
            while i < len(text) and text[i] == quote:  # up to two quotes may end the content
                i += 1
            return i, line
        i += 1
    return i, line


def guarded_loads(path: Path, text: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """Parse ``text`` after the nesting scan; malformed TOML is a located problem, never a traceback."""
    if problem := nesting_problem(path, text):
        return None, problem
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        return None, Problem(path, int(m.group(1)) if m else None, "", f"malformed TOML: {e}")
    except RecursionError:
        return None, Problem(path, None, "", "nested too deeply to parse")


def control_problem(value: str) -> str | None:
    """Why a string may not appear in a declaration, or None."""
    for c in value:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F or c in _BIDI:
            return f"has a control character (U+{o:04X})"
    return None


def iter_strings(doc: Any, fpath: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every key (as its own path) and every string value in a parsed document, with its field path."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield fpath + (k,), k
            yield from iter_strings(v, fpath + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from iter_strings(v, fpath + (i,))
    elif isinstance(doc, str):
        yield fpath, doc
