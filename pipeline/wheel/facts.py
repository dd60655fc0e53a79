"""Inspecting a wheel archive (PEP 427, PEP 376 RECORD, core metadata via ``packaging.metadata``).

``inspect`` is pure (bytes in, facts out); ``facts_for`` caches its result in the store under
``refs/wheel-facts/<wheel sha256>`` and keeps the METADATA bytes as an object (served as the PEP 658
``.whl.metadata`` file by snapshots).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import stat
import zipfile
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any

from packaging.metadata import InvalidMetadata, Metadata, parse_email
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pipeline.store.local import Store

MAX_UNCOMPRESSED = 2 << 30          # 2 GiB in all
MAX_RATIO = 200                     # uncompressed / compressed, for members over 1 MiB
RECORD_SIGNATURES = ("RECORD.jws", "RECORD.p7s")
FACTS_KIND = "wheel-facts"
INSTALLER_FIELDS = {"metadata_version", "name", "version", "requires_dist", "requires_python", "provides_extra"}


@dataclass
class WheelFacts:
    filename: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metadata: bytes | None = None
    name: str | None = None
    version: str | None = None
    requires_python: str | None = None
    requires_dist: list[str] = field(default_factory=list)
    provides_extra: list[str] = field(default_factory=list)
    wheel_tags: list[str] = field(default_factory=list)

    def to_json(self, metadata_digest: str | None) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "metadata"}
        d["metadata_sha256"] = metadata_digest
        d["references"] = [metadata_digest] if metadata_digest else []
        return d


def record_hash(data: bytes) -> str:
    """PEP 376/427 RECORD hash: sha256= urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _unsafe_name(name: str) -> str | None:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if ".." in name.split("/"):
        return "'..' in path"
    return None


def inspect(data: bytes, filename: str) -> WheelFacts:
    facts = WheelFacts(filename)
    p = facts.problems
    try:
        fname, fversion, _, ftags = parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        p.append(f"bad wheel filename: {e}")
        return facts
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        p.append(f"not a valid zip archive: {e}")
        return facts
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        seen: set[str] = set()
        total = 0
        for info in infos:
            if info.filename in seen:
                p.append(f"duplicate member {info.filename!r}")
            seen.add(info.filename)
            if why := _unsafe_name(info.filename):
                p.append(f"unsafe member {info.filename!r}: {why}")
            if stat.S_ISLNK(info.external_attr >> 16):
                p.append(f"symlink member {info.filename!r}")
            total += info.file_size
            if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                p.append(f"member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}x")
        if total > MAX_UNCOMPRESSED:
            p.append(f"uncompressed size {total} exceeds {MAX_UNCOMPRESSED}")
            return facts
        dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info") and "/" in n}
        expected = f"{fname.replace('-', '_')}-{fversion}.dist-info"
        matching = [d for d in dist_infos
                    if canonicalize_name(d[: -len(".dist-info")].rsplit("-", 1)[0]) == fname]
        if len(matching) != 1:
            p.append(f"expected one .dist-info directory like {expected}, found {sorted(dist_infos)}")
            return facts
        di = matching[0]
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            p.append(f"corrupt archive: {e}")
            return facts
        if bad is not None:
            p.append(f"CRC mismatch in {bad!r}")
        _check_wheel_file(zf, di, ftags, p, facts)
        _check_record(zf, di, names, p)
        try:
            meta_bytes = zf.read(f"{di}/METADATA")
        except KeyError:
            p.append(f"{di}/METADATA is missing")
            return facts
    facts.metadata = meta_bytes
    raw, unparsed = parse_email(meta_bytes)
    try:
        meta = Metadata.from_raw(raw, validate=True)
    except (InvalidMetadata, ExceptionGroup) as e:
        errors = e.exceptions if isinstance(e, ExceptionGroup) else [e]
        for err in errors:
            # Installers read these; anything else (e.g. License-File under Metadata-Version 2.1,
            # which older backends wrote) is kept as a warning, as pip accepts it.
            fatal = getattr(err, "field", None) in INSTALLER_FIELDS and "introduced in" not in str(err)
            (p if fatal else facts.warnings).append(f"METADATA: {err}")
    else:
        if canonicalize_name(meta.name) != fname:
            p.append(f"METADATA Name {meta.name!r} does not match the filename's {fname!r}")
        if meta.version != fversion:
            p.append(f"METADATA Version {meta.version} does not match the filename's {fversion}")
    facts.name = raw.get("name")
    facts.version = raw.get("version")
    facts.requires_python = raw.get("requires_python")
    facts.requires_dist = list(raw.get("requires_dist", []))
    facts.provides_extra = list(raw.get("provides_extra", []))
    return facts


def _check_wheel_file(zf: zipfile.ZipFile, di: str, ftags: frozenset, p: list[str], facts: WheelFacts) -> None:
    try:
        wheel = BytesParser().parsebytes(zf.read(f"{di}/WHEEL"))
    except KeyError:
        p.append(f"{di}/WHEEL is missing")
        return
    version = wheel.get("Wheel-Version", "")
    if not version.startswith("1."):
        p.append(f"WHEEL: unsupported Wheel-Version {version!r}")
    if wheel.get("Root-Is-Purelib", "").lower() not in ("true", "false"):
        p.append("WHEEL: Root-Is-Purelib must be true or false")
    declared = set(wheel.get_all("Tag") or [])
    facts.wheel_tags = sorted(declared)
    if declared and declared != {str(t) for t in ftags}:
        p.append(f"WHEEL: Tag lines {sorted(declared)} do not match the filename's tags")


def _check_record(zf: zipfile.ZipFile, di: str, names: list[str], p: list[str]) -> None:
    try:
        text = zf.read(f"{di}/RECORD").decode("utf-8")
    except KeyError:
        p.append(f"{di}/RECORD is missing")
        return
    listed: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != 3:
            p.append(f"RECORD: malformed row {row!r}")
            continue
        path, digest, size = row
        if path in listed:
            p.append(f"RECORD: {path!r} listed twice")
        listed[path] = (digest, size)
    members = [n for n in names if not n.endswith("/")]
    for name in members:
        if name in (f"{di}/RECORD",) + tuple(f"{di}/{s}" for s in RECORD_SIGNATURES):
            continue
        if name not in listed:
            p.append(f"RECORD: member {name!r} is not listed")
            continue
        digest, size = listed[name]
        data = zf.read(name)
        if not digest.startswith("sha256="):
            p.append(f"RECORD: {name!r} has no sha256 hash ({digest!r})")
        elif digest != record_hash(data):
            p.append(f"RECORD: hash of {name!r} does not match")
        if size and size != str(len(data)):
            p.append(f"RECORD: size of {name!r} is {len(data)}, RECORD says {size}")
    for path in listed:
        if path not in members:
            p.append(f"RECORD: lists {path!r}, which is not in the archive")


def facts_for(store: Store, sha256: str, filename: str) -> WheelFacts:
    """Facts of a stored wheel, computed once per wheel hash."""
    cached = store.get_ref(FACTS_KIND, sha256)
    if cached:
        doc = store.read_json(cached)
        meta = store.read_bytes(doc["metadata_sha256"]) if doc.get("metadata_sha256") else None
        fields = {k: v for k, v in doc.items() if k in WheelFacts.__dataclass_fields__}
        return WheelFacts(**fields, metadata=meta)
    facts = inspect(store.read_bytes(sha256), filename)
    with store.shared():
        meta_digest = store.put_bytes(facts.metadata) if facts.metadata is not None else None
        store.set_ref(FACTS_KIND, sha256, store.put_json(facts.to_json(meta_digest)))
    return facts
