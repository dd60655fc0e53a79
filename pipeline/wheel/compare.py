"""Compare a rebuilt wheel with the upstream one (PEP 427 archives).

``identical``: the same bytes. ``equivalent``: the same member names with the
same contents; only zip metadata (order, timestamps, permissions, compression)
differs. ``differs``: members missing, added or with other contents; text
members get a unified diff.
"""

from __future__ import annotations

import difflib
import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_DIFF_CHARS = 20_000
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

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "only_upstream": self.only_upstream,
            "only_rebuild": self.only_rebuild,
            "content_differs": self.content_differs,
            "zip_metadata_differs": {k: v[:50] for k, v in self.zip_metadata.items()},
            "order_differs": self.order_differs,
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
        return f"differs ({'; '.join(parts)})"


def _text(data: bytes) -> list[str] | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def compare_wheels(upstream: Path, rebuild: Path) -> Comparison:
    if hashlib.sha256(upstream.read_bytes()).digest() == hashlib.sha256(rebuild.read_bytes()).digest():
        return Comparison("identical")
    with zipfile.ZipFile(upstream) as a, zipfile.ZipFile(rebuild) as b:
        ia = {i.filename: i for i in a.infolist()}
        ib = {i.filename: i for i in b.infolist()}
        c = Comparison("equivalent")
        c.only_upstream = sorted(set(ia) - set(ib))
        c.only_rebuild = sorted(set(ib) - set(ia))
        common = [n for n in ia if n in ib]
        c.order_differs = common != [n for n in ib if n in ia]
        diffs: list[str] = []
        for name in sorted(common):
            for fld in _ZIP_FIELDS:
                if getattr(ia[name], fld) != getattr(ib[name], fld):
                    c.zip_metadata.setdefault(fld, []).append(name)
            da, db = a.read(name), b.read(name)
            if da == db:
                continue
            c.content_differs.append(name)
            ta, tb = _text(da), _text(db)
            if ta is not None and tb is not None:
                diffs.extend(difflib.unified_diff(ta, tb, f"upstream/{name}", f"rebuild/{name}"))
            else:
                diffs.append(f"Binary member {name} differs ({len(da)} vs {len(db)} bytes)\n")
        diff = "".join(diffs)
        c.diff = diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[diff truncated]\n"
    if c.only_upstream or c.only_rebuild or c.content_differs:
        c.verdict = "differs"
    return c
