"""Releases: a signed manifest per snapshot, chained to its predecessor, logged in a transparency
log, listed in an Atom feed, and comparable with ``diff``.

Layout (static files; ``$WHEELPROOF_RELEASES``, else ``<store>/releases``)::

    wheelproof.pub                      the release key (minisign public key)
    log.vkey                            the same key as a signed-note verifier key
    manifests/<NNNNNN>-<cid>.json       release manifests (canonical JSON) ...
    manifests/<NNNNNN>-<cid>.json.minisig   ... and their minisign signatures
    latest                              the newest manifest's file name
    feed.atom                           one entry per release
    log/checkpoint                      C2SP tlog-checkpoint, signed note
    log/tile/...                        C2SP tlog-tiles (hashes and entry bundles)

The secret key never enters the store, a snapshot or this directory (publishing refuses a key file
inside them).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import html
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from pipeline.export import torrent
from pipeline.export.ipfs import car, dagpb
from pipeline.export.ipfs.multiformats import CID, DAG_PB
from pipeline.store.local import Store, atomic_write, sha256_file
from pipeline.trust import tlog
from pipeline.trust.checkpoint import Checkpoint, HistoryError, ReleaseError, require_extends
from pipeline.trust.pinned import PinnedCheckpoint
from pipeline.trust.signing import (
    PublicKey,
    SecretKey,
    SignatureError,
    minisign_sign,
    minisign_verify,
    sign_note,
    verify_note,
)

__all__ = ["attestation_entry", "Checkpoint", "HistoryError", "LoggedRelease", "ReleaseError", "Releases",
           "canonical", "diff", "diff_text", "git_commit", "manifest_name", "prove_consistency", "prove_inclusion",
           "release_entry", "verify_release", "wheel_entry"]

RELEASES_ENV = "WHEELPROOF_RELEASES"
ORIGIN_ENV = "WHEELPROOF_LOG_ORIGIN"
DEFAULT_ORIGIN = "wheelproof.local/releases"


def canonical(doc: Any) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def wheel_entry(filename: str, sha256: str, release: str) -> bytes:
    return json.dumps({"kind": "wheel", "filename": filename, "sha256": sha256, "release": release},
                      sort_keys=True, separators=(",", ":")).encode()


def attestation_entry(attestation: dict[str, Any], release: str) -> bytes:
    """A log entry for one published rebuild attestation (by the SHA-256 of its envelope's bytes)."""
    return json.dumps({"kind": "attestation", "sha256": attestation["sha256"], "project": attestation["project"],
                       "derivation_id": attestation["derivation_id"], "builder_key": attestation["builder_key"],
                       "release": release}, sort_keys=True, separators=(",", ":")).encode()


def release_entry(manifest: dict[str, Any], manifest_sha256: str) -> bytes:
    return json.dumps({"kind": "release", "root": manifest["root"], "sequence": manifest["sequence"],
                       "manifest_sha256": manifest_sha256}, sort_keys=True, separators=(",", ":")).encode()


def manifest_name(sequence: int, root: str) -> str:
    return f"{sequence:06d}-{root}.json"


@dataclass(frozen=True)
class LoggedRelease:
    """A release entry of the log: where it is and what it commits to."""

    index: int
    sequence: int
    root: str
    manifest_sha256: str

    @property
    def name(self) -> str:
        return manifest_name(self.sequence, self.root)


def logged_releases(entries: list[bytes]) -> list[LoggedRelease]:
    """The log's release entries, checked to number 1, 2, 3, ... (a repeated or skipped number is a fork)."""
    out: list[LoggedRelease] = []
    for i, raw in enumerate(entries):
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ReleaseError(f"log entry {i} is not JSON") from None
        if doc.get("kind") != "release":
            continue
        if doc.get("sequence") != len(out) + 1:
            raise HistoryError(f"log entry {i} is release {doc.get('sequence')} but follows release {len(out)}: "
                               "the log holds a duplicated or skipped sequence number (a forked history)")
        out.append(LoggedRelease(i, doc["sequence"], doc["root"], doc["manifest_sha256"]))
    return out


class Releases:
    """The release directory and its log."""

    def __init__(self, root: Path, origin: str | None = None):
        self.root = root
        self.manifests = root / "manifests"
        self.log = root / "log"
        self.origin = origin or os.environ.get(ORIGIN_ENV) or DEFAULT_ORIGIN

    @classmethod
    def default(cls, store: Store) -> Releases:
        return cls(Path(os.environ.get(RELEASES_ENV) or store.root / "releases"))

    # -- reading ---------------------------------------------------------------------------
    def public_key(self) -> PublicKey:
        path = self.root / "wheelproof.pub"
        if not path.is_file():
            raise ReleaseError(f"{path} is missing: publish once to create it")
        return PublicKey.parse(path.read_text())

    def manifest_paths(self) -> list[Path]:
        return sorted(self.manifests.glob("*.json")) if self.manifests.is_dir() else []

    def latest(self) -> Path | None:
        marker = self.root / "latest"
        return self.manifests / marker.read_text().strip() if marker.is_file() else None

    def checkpoint(self, public: PublicKey) -> Checkpoint | None:
        path = self.log / "checkpoint"
        if not path.is_file():
            return None
        try:
            return Checkpoint.parse(verify_note(public, self.origin, path.read_text()))
        except SignatureError as e:
            raise ReleaseError(f"{path}: {e}") from None

    def entries(self, size: int) -> list[bytes]:
        return tlog.read_entries(self.log, size)

    def verified_log(self, public: PublicKey) -> tuple[Checkpoint | None, list[bytes]]:
        """The signed checkpoint and the entries, checked to hash to its root."""
        cp = self.checkpoint(public)
        if cp is None:
            return None, []
        try:
            entries = self.entries(cp.size)
        except (OSError, ValueError) as e:
            raise ReleaseError(f"the log no longer holds the {cp.size} entries its signed checkpoint covers "
                               f"({e}): the log was rewritten") from None
        actual = tlog.root([tlog.leaf_hash(e) for e in entries])
        if actual != cp.root:
            raise ReleaseError(f"the log's entries do not hash to the signed checkpoint's root (size {cp.size}): "
                               "the log was rewritten")
        return cp, entries

    # -- publishing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One publisher at a time (flock(2) on ``.publish.lock``); a second one fails at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".publish.lock", "a+b") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReleaseError(f"another publish holds {self.root / '.publish.lock'}; try again when it "
                                   "has finished") from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def publish(self, key: SecretKey, root: CID, car_path: Path, published: list[dict[str, Any]],
                counts: dict[str, Any], commit: str | None, now: dt.datetime,
                refuse_inside: list[Path], key_path: Path | None = None,
                state: Path | None = None,
                attestations: list[dict[str, Any]] | None = None,
                car_digest: tuple[str, int] | None = None) -> tuple[Path, dict[str, Any]]:
        """Sign, log and list a release, under an exclusive lock.

        ``car_digest`` is the CAR's (SHA-256, size) as :func:`pipeline.export.carmake.make_car` computed
        them while writing it or checked them by its stamp; without it ``car_path`` is hashed here.

        ``state`` (default: ``<key>.checkpoint`` beside the secret key) holds the last checkpoint this
        publisher signed; a log that does not extend it is refused before anything is written. The
        sequence number comes from the log, never from ``latest``. Write order: the manifest and its
        signature, then the log (tiles, then the signed checkpoint), then ``state``, then ``latest`` and
        the feed; a crash leaves either an unlogged manifest (removed by the next publish, which reuses
        its number) or a logged release, never two releases with one number.
        """
        if key_path is not None:
            resolved = key_path.resolve()
            for forbidden in refuse_inside + [self.root]:
                if resolved.is_relative_to(forbidden.resolve()):
                    raise ReleaseError(f"the secret key {key_path} is inside {forbidden}: move it out "
                                       "(it must never enter the store, a snapshot or the release directory)")
        state = state or (key_path.with_suffix(".checkpoint") if key_path is not None else None)
        if state is None:
            raise ReleaseError("publishing needs the publisher's checkpoint file (state=, or key_path= beside it)")
        for forbidden in refuse_inside + [self.root]:
            if state.resolve().is_relative_to(forbidden.resolve()):
                raise ReleaseError(f"the publisher's checkpoint {state} is inside {forbidden}: keep it beside the key")
        with self._exclusive():
            return self._publish(key, root, car_path, published, counts, commit, now, PinnedCheckpoint(state),
                                 attestations or [], car_digest)

    def _publish(self, key: SecretKey, root: CID, car_path: Path, published: list[dict[str, Any]],
                 counts: dict[str, Any], commit: str | None, now: dt.datetime,
                 pinned_file: PinnedCheckpoint, attestations: list[dict[str, Any]],
                 car_digest: tuple[str, int] | None = None) -> tuple[Path, dict[str, Any]]:
        public = key.public
        pub_path = self.root / "wheelproof.pub"
        if pub_path.is_file() and PublicKey.parse(pub_path.read_text()) != public:
            raise ReleaseError(f"the secret key ({public.key_id_hex}) is not the release key "
                               f"{PublicKey.parse(pub_path.read_text()).key_id_hex} in {pub_path}")
        pinned = pinned_file.load(public, self.origin)
        old_cp, entries = self.verified_log(public)
        if pinned is not None:
            require_extends(pinned, pinned_file.path, old_cp, entries, self.log)
        releases = logged_releases(entries)
        previous_path, previous = None, None
        if releases:
            last = releases[-1]
            previous_path = self.manifests / last.name
            previous = self._logged_manifest(last, public)
            if previous["root"] == str(root):
                raise ReleaseError(f"{root} is already released as {previous_path.name}")
        sequence = len(releases) + 1
        self._clear_unlogged(releases, sequence, old_cp, pinned)
        try:
            car_sha, car_size = car_digest if car_digest is not None else sha256_file(car_path)
        except OSError as e:
            raise ReleaseError(f"{car_path}: the snapshot's CAR cannot be read ({e.strerror or e}): make it with "
                               f"`python -m pipeline car {root}`") from None
        tree_root = old_cp.root if old_cp else tlog.root([])
        manifest: dict[str, Any] = {
            "schema": 1, "kind": "wheelproof-release",
            "sequence": sequence,
            "root": str(root),
            "car": {"filename": car_path.name, "sha256": car_sha, "size": car_size},
            "torrent": torrent.release_field_beside(car_path),
            "previous": {"root": previous["root"], "sequence": previous["sequence"],
                         "manifest_sha256": hashlib.sha256(previous_path.read_bytes()).hexdigest()}
            if previous and previous_path else None,
            "log": {"origin": self.origin, "size": old_cp.size if old_cp else 0,
                    "root": base64.b64encode(tree_root).decode()},
            "time": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "declarations_commit": commit,
            "counts": counts,
            "wheels": published,
        }
        if attestations:  # each builder's signed rebuild statement, logged so it cannot later be denied
            manifest["attestations"] = attestations
        manifest["changes"] = diff(previous, manifest) if previous else {"summary": "first release"}
        data = canonical(manifest)
        name = manifest_name(sequence, str(root))
        path = self.manifests / name
        trusted = f"wheelproof release {sequence} {root} {manifest['time']}"
        # the manifest first (unlogged until the log names it), then the log, then the pointers
        atomic_write(path, data)
        atomic_write(path.with_suffix(".json.minisig"), minisign_sign(key, data, trusted).encode())
        if not pub_path.is_file():
            atomic_write(pub_path, public.minisign().encode())
            atomic_write(self.root / "log.vkey", (public.vkey(self.origin) + "\n").encode())
        new_entries = entries + [release_entry(manifest, hashlib.sha256(data).hexdigest())]
        new_entries += [wheel_entry(w["filename"], w["sha256"], str(root)) for w in published]
        new_entries += [attestation_entry(a, str(root)) for a in attestations]
        self._append(key, old_cp, entries, new_entries)
        pinned_file.save((self.log / "checkpoint").read_text())
        atomic_write(self.root / "latest", (name + "\n").encode())
        atomic_write(self.root / "feed.atom", self.feed().encode())
        return path, manifest

    def _logged_manifest(self, logged: LoggedRelease, public: PublicKey) -> dict[str, Any]:
        """The manifest the log names for a release: present, the bytes the log committed to, signed."""
        path = self.manifests / logged.name
        if not path.is_file():
            raise ReleaseError(f"the log's release {logged.sequence} (entry {logged.index}) has no manifest "
                               f"{path}: restore it from a mirror")
        if hashlib.sha256(path.read_bytes()).hexdigest() != logged.manifest_sha256:
            raise ReleaseError(f"{path} is not the manifest the log holds for release {logged.sequence} "
                               f"(its SHA-256 differs from log entry {logged.index})")
        return self.verify_manifest(path, public)

    def _clear_unlogged(self, releases: list[LoggedRelease], sequence: int, cp: Checkpoint | None,
                        pinned: Checkpoint | None) -> None:
        """Manifests the log does not name. One numbered ``sequence`` left by an interrupted publish is
        removed (it was never logged, so never released) when this publisher's pinned checkpoint is
        exactly the log's; any other is refused: a signed manifest the log lacks means a rolled-back log."""
        logged = {r.name: r.manifest_sha256 for r in releases}
        interrupted: list[Path] = []
        for path in self.manifest_paths():
            if logged.get(path.name) == hashlib.sha256(path.read_bytes()).hexdigest():
                continue
            number = path.name.split("-", 1)[0]
            if number.isdigit() and int(number) == sequence and pinned is not None and pinned == cp:
                interrupted.append(path)
                continue
            raise HistoryError(f"{path} is not in the log (which holds {len(releases)} releases): the log was "
                               "rolled back or the file was planted; if a publish was interrupted, move it away")
        for path in interrupted:  # only once nothing is refused
            path.unlink()
            path.with_suffix(".json.minisig").unlink(missing_ok=True)

    def _append(self, key: SecretKey, old: Checkpoint | None, old_entries: list[bytes],
                new_entries: list[bytes]) -> Checkpoint:
        leaves = [tlog.leaf_hash(e) for e in new_entries]
        new_root = tlog.root(leaves)
        if old is not None:
            proof = tlog.consistency_proof(old.size, leaves)
            if not tlog.verify_consistency(old.size, len(leaves), old.root, new_root, proof):
                raise ReleaseError("refusing to sign a tree that is inconsistent with the last checkpoint")
        written = tlog.write_tiles(self.log, new_entries)
        assert written == new_root
        cp = Checkpoint(self.origin, len(new_entries), new_root)
        atomic_write(self.log / "checkpoint", sign_note(key, self.origin, cp.text()).encode())
        return cp

    # -- verification ------------------------------------------------------------------------
    def verify_manifest(self, path: Path, public: PublicKey) -> dict[str, Any]:
        sig = path.with_suffix(".json.minisig")
        if not sig.is_file():
            raise ReleaseError(f"{sig} is missing")
        try:
            minisign_verify(public, path.read_bytes(), sig.read_text())
        except SignatureError as e:
            raise ReleaseError(f"{path.name}: {e}") from None
        return json.loads(path.read_bytes())

    def feed(self) -> str:
        entries, updated = [], "1970-01-01T00:00:00Z"
        for path in reversed(self.manifest_paths()):
            m = json.loads(path.read_bytes())
            updated = max(updated, m["time"])
            summary = m.get("changes", {}).get("summary", "")
            entries.append(
                f"  <entry>\n    <title>Release {m['sequence']}: {m['root']}</title>\n"
                f"    <id>ipfs://{m['root']}</id>\n    <updated>{m['time']}</updated>\n"
                f"    <link rel=\"alternate\" href=\"ipfs://{m['root']}/\"/>\n"
                f"    <link rel=\"related\" href=\"manifests/{path.name}\"/>\n"
                f"    <summary>{html.escape(summary)}</summary>\n  </entry>\n")
        return ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'
                f"  <title>Wheelproof releases ({html.escape(self.origin)})</title>\n"
                f"  <id>urn:wheelproof:{html.escape(self.origin)}</id>\n  <updated>{updated}</updated>\n"
                + "".join(entries) + "</feed>\n")


def verify_release(manifest_path: Path, signature_path: Path, car_path: Path, public: PublicKey,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Check a release from its manifest, signature, CAR and public key alone."""
    data = manifest_path.read_bytes()
    try:
        trusted = minisign_verify(public, data, signature_path.read_text())
    except SignatureError as e:
        raise ReleaseError(f"{manifest_path}: {e}") from None
    manifest = json.loads(data)
    try:
        car_bytes = car_path.read_bytes()
    except OSError as e:
        raise ReleaseError(f"{car_path}: the CAR cannot be read ({e.strerror or e})") from None
    if hashlib.sha256(car_bytes).hexdigest() != manifest["car"]["sha256"] or len(car_bytes) != manifest["car"]["size"]:
        raise ReleaseError(f"{car_path}: its SHA-256 or size differs from the signed manifest")
    try:
        roots, blocks_iter = car.read(car_bytes)
        blocks = {c: b for c, b in blocks_iter}
    except (car.CARError, ValueError) as e:
        raise ReleaseError(f"{car_path}: {e}") from None
    root = CID.parse(manifest["root"])
    if roots != [root]:
        raise ReleaseError(f"{car_path}: its root is not the released root {root}")
    files = _files_in(blocks, root)
    for w in manifest["wheels"]:
        path = f"simple/{w['project']}/{w['filename']}"
        content = files.get(path)
        if content is None:
            raise ReleaseError(f"{car_path}: {path} is missing from the DAG")
        if hashlib.sha256(content).hexdigest() != w["sha256"]:
            raise ReleaseError(f"{car_path}: {path} does not have the released SHA-256")
    log(f"verified: release {manifest['sequence']} {root} ({trusted}); {len(blocks)} blocks, "
        f"{len(manifest['wheels'])} wheels")
    return manifest


def _files_in(blocks: dict[CID, bytes], root: CID) -> dict[str, bytes]:
    """Every file in a complete UnixFS DAG (all blocks must be present)."""
    def get(cid: CID) -> bytes:
        if cid not in blocks:
            raise ReleaseError(f"the CAR lacks block {cid}")
        return blocks[cid]

    def content(cid: CID) -> bytes:
        if cid.codec != DAG_PB:
            return get(cid)
        node = dagpb.decode(get(cid))
        data = dagpb.UnixFSData.decode(node.data or b"")
        return (data.data or b"") + b"".join(content(link.cid) for link in node.links)

    out: dict[str, bytes] = {}

    def walk(cid: CID, prefix: str, hamt: bool = False) -> None:
        node = dagpb.decode(get(cid))
        kind = dagpb.UnixFSData.decode(node.data or b"").type
        for link in node.links:
            name = link.name or ""
            if kind == dagpb.HAMT_SHARD:
                if len(name) == 2:
                    walk(link.cid, prefix, True)
                    continue
                name = name[2:]
            child = link.cid
            is_dir = child.codec == DAG_PB and dagpb.UnixFSData.decode(
                dagpb.decode(get(child)).data or b"").type in (dagpb.DIRECTORY, dagpb.HAMT_SHARD)
            if is_dir:
                walk(child, f"{prefix}{name}/")
            else:
                out[f"{prefix}{name}"] = content(child)

    walk(root, "")
    return out


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """What changed between two release manifests."""
    def by_project(m: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        return {w["project"]: w for w in (m or {}).get("wheels", [])}

    a, b = by_project(old), by_project(new)
    out: dict[str, Any] = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
                           "upgraded": [], "downgraded": [], "bytes_changed": [], "verdict_changed": [],
                           "tests_changed": []}
    for p in sorted(set(a) & set(b)):
        va, vb = Version(a[p]["version"]), Version(b[p]["version"])
        if vb > va:
            out["upgraded"].append({"project": p, "from": str(va), "to": str(vb)})
        elif vb < va:
            out["downgraded"].append({"project": p, "from": str(va), "to": str(vb)})
        elif a[p]["sha256"] != b[p]["sha256"]:
            out["bytes_changed"].append({"project": p, "filename": b[p]["filename"], "from": a[p]["sha256"],
                                         "to": b[p]["sha256"]})
        if a[p].get("verdict") != b[p].get("verdict"):
            out["verdict_changed"].append({"project": p, "from": a[p].get("verdict"), "to": b[p].get("verdict")})
        if a[p].get("tests") != b[p].get("tests"):
            out["tests_changed"].append({"project": p, "from": a[p].get("tests"), "to": b[p].get("tests")})
    parts = [f"{len(out[k])} {k.replace('_', ' ')}" for k in ("added", "removed", "upgraded", "downgraded",
                                                              "bytes_changed", "verdict_changed",
                                                              "tests_changed") if out[k]]
    out["summary"] = ", ".join(parts) or "no changes"
    return out


def diff_text(d: dict[str, Any]) -> str:
    lines = [f"+ {p}" for p in d["added"]] + [f"- {p}" for p in d["removed"]]
    lines += [f"^ {u['project']} {u['from']} -> {u['to']}" for u in d["upgraded"]]
    lines += [f"v {u['project']} {u['from']} -> {u['to']}" for u in d["downgraded"]]
    lines += [f"! {u['project']} {u['filename']}: bytes changed {u['from'][:12]} -> {u['to'][:12]}"
              for u in d["bytes_changed"]]
    lines += [f"~ {u['project']}: verdict {u['from']} -> {u['to']}" for u in d["verdict_changed"]]
    lines += [f"~ {u['project']}: tests {u['from']} -> {u['to']}" for u in d["tests_changed"]]
    return "\n".join(lines + [d["summary"]])


def git_commit(path: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def prove_inclusion(rel: Releases, public: PublicKey, match: Callable[[dict[str, Any]], bool]
                    ) -> list[tuple[int, dict[str, Any], list[bytes], Checkpoint]]:
    cp, entries = rel.verified_log(public)
    if cp is None:
        raise ReleaseError("the log is empty")
    leaves = [tlog.leaf_hash(e) for e in entries]
    out = []
    for i, e in enumerate(entries):
        doc = json.loads(e)
        if match(doc):
            proof = tlog.inclusion_proof(i, leaves)
            if not tlog.verify_inclusion(i, cp.size, leaves[i], proof, cp.root):
                raise ReleaseError(f"inclusion proof for entry {i} does not verify")
            out.append((i, doc, proof, cp))
    return out


def prove_consistency(rel: Releases, public: PublicKey, old_note: str) -> tuple[Checkpoint, Checkpoint, list[bytes]]:
    try:
        old = Checkpoint.parse(verify_note(public, rel.origin, old_note))
    except SignatureError as e:
        raise ReleaseError(f"the old checkpoint: {e}") from None
    new, entries = rel.verified_log(public)
    assert new is not None
    if old.size > new.size:
        raise ReleaseError(f"the old checkpoint (size {old.size}) is larger than the log ({new.size})")
    leaves = [tlog.leaf_hash(e) for e in entries]
    proof = tlog.consistency_proof(old.size, leaves)
    if not tlog.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise ReleaseError(f"the log of size {new.size} is NOT consistent with the checkpoint of size {old.size}: "
                           "history was rewritten")
    return old, new, proof
