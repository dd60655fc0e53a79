"""``challenge``: compare what independent builders attest for each derivation, as ``guix challenge``
does for substitute servers (per item: each builder's hash; identical, differ or inconclusive; the
differing files and a diff).

A SOURCE is a store (``refs/attestations``), a directory written by ``export-attestations`` or a
snapshot (a root CID in the local store, or a ``.car`` file). Every envelope is verified with
:func:`pipeline.trust.attestation.verify_attestation` against the trusted keys; claims are grouped by
derivation id (which every honest builder computes alike, pipeline/model/derivation.py):

- **identical**: two or more trusted builders, one rebuilt digest;
- **differ**: two or more rebuilt digests; the differing members and a unified diff of text members are
  shown when both wheels are reachable in the sources (otherwise each builder's own differences from
  upstream, from its statement);
- **inconclusive**: fewer than two builders with a rebuilt wheel.

Export layout (also what a snapshot carries)::

    attestations/<name>/<derivation id>.<key id>.intoto.json   DSSE envelopes
    builders/<key id>.pem                                      the signers' public keys
    wheels/<sha256>/<filename>                                 rebuilt wheels (exports only)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.export.ipfs import car
from pipeline.export.ipfs.gateway import DagReader, NotFound
from pipeline.export.ipfs.multiformats import CID, CIDError
from pipeline.model.dsse import MAX_ENVELOPE_BYTES, EnvelopeError
from pipeline.model.errors import WheelproofError
from pipeline.model.limits import MAX_ARTIFACT_SIZE
from pipeline.store.local import Store, atomic_write
from pipeline.trust.attestation import (
    VerifiedAttestation,
    store_attestation,
    store_public_key,
    stored_attestations,
    stored_public_keys,
    verify_attestation,
)
from pipeline.trust.builder_key import BuilderKeyError, BuilderPublicKey
from pipeline.wheel.compare import compare_wheels

__all__ = ["Claim", "ChallengeError", "DerivationReport", "Report", "Source", "challenge", "export_attestations",
           "import_attestations", "open_source"]

_ENVELOPE_NAME = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{64})\.intoto\.json$")
_KEY_NAME = re.compile(r"^([0-9a-f]{64})\.pem$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ChallengeError(WheelproofError):
    """A source cannot be read as a store, an export or a snapshot."""


class Source(Protocol):
    label: str

    def keys(self) -> dict[str, BuilderPublicKey]: ...
    def envelopes(self) -> Iterator[tuple[str, bytes]]: ...
    def wheel(self, sha256: str, filename: str, project: str) -> bytes | None: ...


class StoreSource:
    def __init__(self, store: Store, label: str):
        self.store, self.label = store, label

    def keys(self) -> dict[str, BuilderPublicKey]:
        return stored_public_keys(self.store)

    def envelopes(self) -> Iterator[tuple[str, bytes]]:
        for drv, key_id, data in stored_attestations(self.store):
            yield f"{self.label}: refs/attestations/{drv}.{key_id}", data

    def wheel(self, sha256: str, filename: str, project: str) -> bytes | None:
        return self.store.read_bytes(sha256) if self.store.has(sha256) else None


def _read_regular(path: Path, cap: int) -> bytes:
    """A regular file's bytes, opened without following a symlink, at most ``cap`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise ChallengeError(f"{path}: {e.strerror} (only regular files are read)") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ChallengeError(f"{path}: not a regular file")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ChallengeError(f"{path}: over the {cap}-byte cap")
    return data


class DirSource:
    def __init__(self, root: Path):
        self.root, self.label = root, str(root)

    def _entries(self, *parts: str) -> list[Path]:
        d = self.root.joinpath(*parts)
        return sorted(d.iterdir()) if d.is_dir() and not d.is_symlink() else []

    def keys(self) -> dict[str, BuilderPublicKey]:
        out = {}
        for p in self._entries("builders"):
            m = _KEY_NAME.match(p.name)
            if m:
                key = BuilderPublicKey.from_pem(_read_regular(p, 1 << 16), str(p))
                if key.key_id == m.group(1):
                    out[key.key_id] = key
        return out

    def envelopes(self) -> Iterator[tuple[str, bytes]]:
        for project in self._entries("attestations"):
            if not _PROJECT.match(project.name):
                continue
            for p in self._entries("attestations", project.name):
                if _ENVELOPE_NAME.match(p.name):
                    yield str(p), _read_regular(p, MAX_ENVELOPE_BYTES)

    def wheel(self, sha256: str, filename: str, project: str) -> bytes | None:
        if not _HEX64.match(sha256) or "/" in filename or filename.startswith("."):
            return None
        path = self.root / "wheels" / sha256 / filename
        if not path.is_file():
            return None
        data = _read_regular(path, MAX_ARTIFACT_SIZE)
        return data if hashlib.sha256(data).hexdigest() == sha256 else None


class _Blocks:
    """Blocks of a CAR file, each already checked against its CID by :func:`car.read`."""

    def __init__(self, blocks: Mapping[str, bytes]):
        self.blocks = blocks

    def has(self, digest: str) -> bool:
        return digest in self.blocks

    def read_bytes(self, digest: str) -> bytes:
        return self.blocks[digest]


class SnapshotSource:
    def __init__(self, root: CID, reader: DagReader, label: str):
        self.root, self.reader, self.label = root, reader, label

    def _file(self, *segments: str, cap: int) -> bytes | None:
        try:
            node = self.reader.resolve(self.root, list(segments))
        except (NotFound, KeyError):
            return None
        if node.is_dir or self.reader.size(node) > cap:
            return None
        return b"".join(self.reader.read(node, 0, self.reader.size(node)))

    def _listing(self, *segments: str) -> list[str]:
        try:
            node = self.reader.resolve(self.root, list(segments))
        except (NotFound, KeyError):
            return []
        return sorted(name for name, _ in self.reader.entries(node)) if node.is_dir else []

    def keys(self) -> dict[str, BuilderPublicKey]:
        out = {}
        for name in self._listing("builders"):
            m = _KEY_NAME.match(name)
            data = self._file("builders", name, cap=1 << 16) if m else None
            if m and data:
                key = BuilderPublicKey.from_pem(data, f"{self.label}/builders/{name}")
                if key.key_id == m.group(1):
                    out[key.key_id] = key
        return out

    def envelopes(self) -> Iterator[tuple[str, bytes]]:
        for project in self._listing("attestations"):
            for name in self._listing("attestations", project):
                data = self._file("attestations", project, name, cap=MAX_ENVELOPE_BYTES)
                if _ENVELOPE_NAME.match(name) and data is not None:
                    yield f"{self.label}/attestations/{project}/{name}", data

    def wheel(self, sha256: str, filename: str, project: str) -> bytes | None:
        data = self._file("simple", project, filename, cap=MAX_ARTIFACT_SIZE)
        return data if data is not None and hashlib.sha256(data).hexdigest() == sha256 else None


def open_source(spec: str, local: Store) -> Source:
    path = Path(spec)
    if path.is_dir():
        if (path / "objects").is_dir() and (path / "refs").is_dir():
            return StoreSource(Store(path), f"{spec} (store)")
        return DirSource(path)
    if path.is_file() and spec.endswith(".car"):
        try:
            roots, blocks = car.read(_read_regular(path, 1 << 34))
            held = {cid.hex_digest: block for cid, block in blocks}
        except (car.CARError, CIDError) as e:
            raise ChallengeError(f"--from {spec}: not a valid CAR ({e})") from e
        if len(roots) != 1:
            raise ChallengeError(f"--from {spec}: a snapshot CAR has one root, this has {len(roots)}")
        return SnapshotSource(roots[0], DagReader(_Blocks(held)), f"{spec} (snapshot {roots[0]})")
    try:
        root = CID.parse(spec)
    except CIDError:
        raise ChallengeError(f"--from {spec}: not a store, a directory of exported attestations, a .car file "
                             "or a snapshot CID") from None
    if not local.has(root.hex_digest):
        raise ChallengeError(f"--from {spec}: snapshot {root} is not in the store {local.root}")
    return SnapshotSource(root, DagReader(local), f"snapshot {root}")


@dataclass
class Claim:
    """One trusted builder's verified attestation, and the sources it came from."""

    attestation: VerifiedAttestation
    sources: list[Source] = field(default_factory=list)

    @property
    def key_id(self) -> str:
        return self.attestation.key_id

    def wheel(self) -> bytes | None:
        p = self.attestation.provenance
        if p.rebuilt is None:
            return None
        for s in self.sources:
            data = s.wheel(p.rebuilt[1], p.rebuilt[0], p.name)
            if data is not None:
                return data
        return None


@dataclass
class DerivationReport:
    derivation_id: str
    name: str
    version: str
    claims: list[Claim]
    status: str = "inconclusive"
    differing: list[str] = field(default_factory=list)
    diff: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"derivation_id": self.derivation_id, "name": self.name, "version": self.version,
                "status": self.status, "differing": self.differing, "diff": self.diff, "note": self.note,
                "builders": [{"key_id": c.key_id, "builder_id": c.attestation.provenance.builder_id,
                              "rebuilt_sha256": c.attestation.rebuilt_sha256, "verdict": c.attestation.verdict,
                              "envelope_sha256": c.attestation.envelope_sha256,
                              "sources": [s.label for s in c.sources]} for c in self.claims]}


@dataclass
class Report:
    derivations: list[DerivationReport]
    rejected: list[str]
    untrusted: list[str]
    keys_pinned: bool

    @property
    def failing(self) -> bool:
        return bool(self.rejected) or any(d.status == "differ" for d in self.derivations)

    def totals(self) -> dict[str, int]:
        out = {s: sum(d.status == s for d in self.derivations) for s in ("identical", "differ", "inconclusive")}
        return out | {"rejected": len(self.rejected), "untrusted": len(self.untrusted)}

    def to_json(self) -> str:
        return json.dumps({"derivations": [d.to_json() for d in self.derivations], "rejected": self.rejected,
                           "untrusted": self.untrusted, "keys_pinned": self.keys_pinned, "totals": self.totals()},
                          indent=1)

    def text(self) -> str:
        lines = [] if self.keys_pinned else [
            "warning: no --trusted-keys: signatures were checked against the keys the sources carry, which "
            "shows only that each envelope is intact, not who built it"]
        for d in self.derivations:
            lines.append(f"{d.name} {d.version} (derivation {d.derivation_id[:12]})")
            for c in d.claims:
                a = c.attestation
                lines.append(f"  builder {c.key_id[:16]}  {(a.rebuilt_sha256 or '-' * 64)}  {a.verdict:<10}  "
                             f"{', '.join(s.label for s in c.sources)}")
            lines.append(f"  {d.status}" + (f": {d.note}" if d.note else ""))
            if d.differing:
                lines.append("  differing members:")
                lines += [f"    {m}" for m in d.differing]
            if d.diff:
                lines += ["    " + ln for ln in d.diff.rstrip("\n").splitlines()]
        lines += [f"rejected: {r}" for r in self.rejected]
        lines += [f"not trusted: {u}" for u in self.untrusted]
        t = self.totals()
        lines.append(f"challenge: {len(self.derivations)} derivations: {t['identical']} identical, "
                     f"{t['differ']} differ, {t['inconclusive']} inconclusive; {t['rejected']} envelopes rejected, "
                     f"{t['untrusted']} by keys not trusted")
        return "\n".join(lines)


def challenge(sources: Sequence[Source], trusted: Sequence[BuilderPublicKey] | None,
              names: Sequence[str] = ()) -> Report:
    keys_pinned = trusted is not None
    if trusted is None:
        seen: dict[str, BuilderPublicKey] = {}
        for s in sources:
            seen.update(s.keys())
        trusted = list(seen.values())
    trusted_ids = {k.key_id for k in trusted}
    claims: dict[tuple[str, str], Claim] = {}
    rejected: list[str] = []
    untrusted: list[str] = []
    for source in sources:
        for where, data in source.envelopes():
            try:
                v = verify_attestation(data, trusted, where=where)
            except EnvelopeError as e:
                claimed = _claimed_keys(data)
                (untrusted if claimed and not claimed & trusted_ids and "not a trusted key" in str(e)
                 else rejected).append(str(e))
                continue
            if names and v.provenance.name not in names:
                continue
            claim = claims.setdefault((v.derivation_id, v.key_id), Claim(v))
            if source not in claim.sources:
                claim.sources.append(source)
    groups: dict[str, list[Claim]] = {}
    for (drv, _), claim in sorted(claims.items()):
        groups.setdefault(drv, []).append(claim)
    reports = []
    for drv, group in groups.items():
        p = group[0].attestation.provenance
        reports.append(_judge(DerivationReport(drv, p.name, p.version, group)))
    reports.sort(key=lambda d: (d.name, d.version, d.derivation_id))
    return Report(reports, rejected, untrusted, keys_pinned)


def _claimed_keys(data: bytes) -> set[str]:
    try:
        doc = json.loads(data)
        return {s["keyid"] for s in doc["signatures"] if isinstance(s.get("keyid"), str)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return set()


def _judge(d: DerivationReport) -> DerivationReport:
    built = [c for c in d.claims if c.attestation.rebuilt_sha256]
    digests = sorted({c.attestation.rebuilt_sha256 for c in built if c.attestation.rebuilt_sha256})
    if len(digests) > 1:
        d.status = "differ"
        a = next(c for c in built if c.attestation.rebuilt_sha256 == digests[0])
        b = next(c for c in built if c.attestation.rebuilt_sha256 == digests[1])
        wa, wb = a.wheel(), b.wheel()
        if wa is not None and wb is not None:
            with tempfile.TemporaryDirectory(prefix="wheelproof-challenge-") as tmp:
                pa, pb = Path(tmp) / "a.whl", Path(tmp) / "b.whl"
                atomic_write(pa, wa)
                atomic_write(pb, wb)
                comparison = compare_wheels(pa, pb)
            d.differing = sorted({*comparison.only_upstream, *comparison.only_rebuild, *comparison.content_differs})
            d.diff = comparison.diff.replace("--- upstream/", f"--- {a.key_id[:16]}/").replace(
                "+++ rebuild/", f"+++ {b.key_id[:16]}/")
            d.note = (f"builder {a.key_id[:16]} vs {b.key_id[:16]}: {comparison.summary()}")
        else:
            d.note = "the wheels are not both reachable in the sources; each builder's differences from upstream: " + \
                "; ".join(f"{c.key_id[:16]}: {', '.join(c.attestation.provenance.differing) or 'none'}"
                          for c in built)
    elif len(built) >= 2:
        d.status = "identical"
    else:
        d.note = "only one builder rebuilt it" if built else "no builder produced a wheel"
    return d


def export_attestations(store: Store, dest: Path, derivation_ids: set[str] | None = None) -> tuple[int, int, int]:
    """Write the store's attestations (of ``derivation_ids``), the keys and the rebuilt wheels to ``dest``."""
    keys = stored_public_keys(store)
    n_env, used, wheels = 0, set(), 0
    for drv, key_id, data in stored_attestations(store):
        key = keys.get(key_id)
        if key is None or (derivation_ids is not None and drv not in derivation_ids):
            continue
        try:
            v = verify_attestation(data, [key], derivation_id=drv, where=f"refs/attestations/{drv}.{key_id}")
        except EnvelopeError:
            continue
        atomic_write(dest / "attestations" / v.provenance.name / f"{drv}.{key_id}.intoto.json", data)
        n_env += 1
        used.add(key_id)
        rebuilt = v.provenance.rebuilt
        if rebuilt and store.has(rebuilt[1]) and "/" not in rebuilt[0]:
            atomic_write(dest / "wheels" / rebuilt[1] / rebuilt[0], store.read_bytes(rebuilt[1]))
            wheels += 1
    for key_id in sorted(used):
        atomic_write(dest / "builders" / f"{key_id}.pem", keys[key_id].pem().encode())
    return n_env, len(used), wheels


def import_attestations(store: Store, source: Source) -> tuple[int, list[str]]:
    """Copy into ``store`` each envelope of ``source`` that verifies with the key the source carries for
    its signer, with that key and the rebuilt wheel when reachable (trust is decided when they are used)."""
    keys = source.keys()
    imported, problems = 0, []
    for where, data in source.envelopes():
        m = _ENVELOPE_NAME.match(Path(where).name)
        claimed = [keys[k] for k in _claimed_keys(data) if k in keys]
        try:
            if not claimed:
                raise EnvelopeError(f"{where}: the source carries no key for its signer")
            v = verify_attestation(data, claimed, where=where)
            if m and (m.group(1), m.group(2)) != (v.derivation_id, v.key_id):
                raise EnvelopeError(f"{where}: the file name does not match the envelope's derivation and signer")
        except (EnvelopeError, BuilderKeyError) as e:
            problems.append(str(e))
            continue
        store_public_key(store, keys[v.key_id])
        store_attestation(store, v.derivation_id, v.key_id, data)
        p = v.provenance
        if p.rebuilt and not store.has(p.rebuilt[1]):
            wheel = source.wheel(p.rebuilt[1], p.rebuilt[0], p.name)
            if wheel is not None:
                store.put_bytes(wheel)
        imported += 1
    return imported, problems
