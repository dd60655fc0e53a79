"""Compare a rebuilt wheel with the upstream one (PEP 427 archives).

``identical``: the same bytes. ``equivalent``: the same member names with the
same contents and executable bits, and in both archives every local header
agrees with its central directory entry (APPNOTE 4.3.7 and 4.3.12); only zip
metadata (order, timestamps, other permission bits, compression, directory
entries) differs. ``differs``: members missing, added, with other contents or
executable bits, or a header disagreement; text members get a unified diff.
Directory entries (names ending in ``/``, which installers ignore) are zip
metadata, never missing members.

The rebuilt wheel comes out of the sandbox, so comparing it is bounded: a member over
``MAX_MEMBER_BYTES`` is compared by a streamed SHA-256 only, text is diffed only when both sides are
under ``MAX_DIFF_INPUT_BYTES`` and ``MAX_DIFF_INPUT_LINES``, the diff is cut after ``MAX_DIFF_LINES``
lines, and diffing stops once ``DIFF_SECONDS`` have been spent (the rest are listed, not diffed).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.wheel.zipcheck import local_header_problems

MAX_DIFF_CHARS = 20_000
MAX_DIFF_LINES = 2_000
MAX_MEMBER_BYTES = 8 << 20
MAX_DIFF_INPUT_BYTES = 256 << 10
MAX_DIFF_INPUT_LINES = 5_000
DIFF_SECONDS = 10.0
_CHUNK = 1 << 16
_ZIP_FIELDS = ("date_time", "external_attr", "compress_type", "create_system", "extra", "comment")


@dataclass
class Comparison:
    verdict: str
    only_upstream: list[str] = field(default_factory=list)
    only_rebuild: list[str] = field(default_factory=list)
    content_differs: list[str] = field(default_factory=list)
    zip_metadata: dict[str, list[str]] = field(default_factory=dict)  # field -> members
    order_differs: bool = False
    diff: str = ""
    executable_differs: list[str] = field(default_factory=list)
    header_problems: list[str] = field(default_factory=list)  # local header vs central directory

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "only_upstream": self.only_upstream,
            "only_rebuild": self.only_rebuild,
            "content_differs": self.content_differs,
            "zip_metadata_differs": {k: v[:50] for k, v in self.zip_metadata.items()},
            "order_differs": self.order_differs,
            "executable_differs": self.executable_differs,
            "header_problems": self.header_problems,
            "diff": self.diff,
        }

    def summary(self) -> str:
        if self.verdict == "identical":
            return "identical"
        if self.verdict == "equivalent":
            what = sorted(self.zip_metadata) + (["member order"] if self.order_differs else [])
            return f"equivalent (zip metadata differs: {', '.join(what) or 'archive layout'})"
        parts = []
        if self.content_differs:
            parts.append(f"{len(self.content_differs)} changed: {', '.join(self.content_differs[:3])}")
        if self.only_upstream:
            parts.append(f"{len(self.only_upstream)} only upstream")
        if self.only_rebuild:
            parts.append(f"{len(self.only_rebuild)} only rebuilt")
        if self.executable_differs:
            parts.append(f"executable bit differs: {', '.join(self.executable_differs[:3])}")
        if self.header_problems:
            parts.append(f"{len(self.header_problems)} local headers disagree with the central directory")
        return f"differs ({'; '.join(parts)})"


def _text(data: bytes) -> list[str] | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _member_digest(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    h = hashlib.sha256()
    with zf.open(info) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def _diff(name: str, da: bytes, db: bytes, budget_left: float, lines_left: int) -> list[str]:
    """A unified diff of two text members, within the size, line and time bounds."""
    if budget_left <= 0 or lines_left <= 0:
        return [f"Text member {name} differs (not diffed: the diff budget is spent)\n"]
    if max(len(da), len(db)) > MAX_DIFF_INPUT_BYTES:
        return [f"Text member {name} differs ({len(da)} vs {len(db)} bytes; too large to diff)\n"]
    ta, tb = _text(da), _text(db)
    if ta is None or tb is None:
        return [f"Binary member {name} differs ({len(da)} vs {len(db)} bytes)\n"]
    if max(len(ta), len(tb)) > MAX_DIFF_INPUT_LINES:
        return [f"Text member {name} differs ({len(ta)} vs {len(tb)} lines; too many to diff)\n"]
    out = list(itertools.islice(difflib.unified_diff(ta, tb, f"upstream/{name}", f"rebuild/{name}"),
                                lines_left + 1))
    if len(out) > lines_left:
        out = out[:lines_left] + ["[diff cut: line limit]\n"]
    return out


def _executable(info: zipfile.ZipInfo) -> bool:
    return bool((info.external_attr >> 16) & 0o111)


def compare_wheels(upstream: Path, rebuild: Path) -> Comparison:
    if _file_digest(upstream) == _file_digest(rebuild):
        return Comparison("identical")
    started = time.monotonic()
    with zipfile.ZipFile(upstream) as a, zipfile.ZipFile(rebuild) as b:
        ia = {i.filename: i for i in a.infolist() if not i.is_dir()}
        ib = {i.filename: i for i in b.infolist() if not i.is_dir()}
        c = Comparison("equivalent")
        dirs_a = {i.filename for i in a.infolist() if i.is_dir()}
        dirs_b = {i.filename for i in b.infolist() if i.is_dir()}
        if dirs_a != dirs_b:
            c.zip_metadata["directory entries"] = sorted(dirs_a ^ dirs_b)
        c.header_problems = local_header_problems(upstream) + local_header_problems(rebuild)
        c.only_upstream = sorted(set(ia) - set(ib))
        c.only_rebuild = sorted(set(ib) - set(ia))
        common = [n for n in ia if n in ib]
        c.order_differs = common != [n for n in ib if n in ia]
        diffs: list[str] = []
        for name in sorted(common):
            for fld in _ZIP_FIELDS:
                if getattr(ia[name], fld) != getattr(ib[name], fld):
                    c.zip_metadata.setdefault(fld, []).append(name)
            if ia[name].compress_size != ib[name].compress_size:  # same data, another deflate stream
                c.zip_metadata.setdefault("compressed size", []).append(name)
            if _executable(ia[name]) != _executable(ib[name]):
                c.executable_differs.append(name)
            if max(ia[name].file_size, ib[name].file_size) > MAX_MEMBER_BYTES:
                if _member_digest(a, ia[name]) != _member_digest(b, ib[name]):
                    c.content_differs.append(name)
                    diffs.append(f"Large member {name} differs by SHA-256 ({ia[name].file_size} vs "
                                 f"{ib[name].file_size} bytes; not diffed)\n")
                continue
            da, db = a.read(name), b.read(name)
            if da == db:
                continue
            c.content_differs.append(name)
            diffs.extend(_diff(name, da, db, DIFF_SECONDS - (time.monotonic() - started),
                               MAX_DIFF_LINES - len(diffs)))
        diff = "".join(diffs)
        c.diff = diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[diff truncated]\n"
    if c.only_upstream or c.only_rebuild or c.content_differs or c.executable_differs or c.header_problems:
        c.verdict = "differs"
    return c
