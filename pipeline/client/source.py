"""A snapshot as a client sees it: a root CID whose blocks come from the local store or, trustlessly,
from an untrusted gateway, each block verified against the CID that asked for it.

Trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/): only ``?format=raw``
answers (``application/vnd.ipld.raw``) are fetched; a block is accepted only if its SHA-256 is the
requested CID's sha2-256 multihash digest (CIDv1 spec, https://github.com/multiformats/cid). A
release (``docs/releases.md``) names the root: its manifest is accepted only with a valid minisign
signature by a key the user trusts (``--trusted-key``), never by a key found beside it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pipeline.export.ipfs.blocks import BlockSource
from pipeline.export.ipfs.gateway import DagReader, NotFound
from pipeline.export.ipfs.multiformats import CID, CIDError
from pipeline.model.errors import IntegrityError, StoreError, WheelproofError
from pipeline.store.local import Store
from pipeline.trust.release import ReleaseError, Releases
from pipeline.trust.signing import PublicKey, SignatureError

__all__ = ["GatewayBlocks", "Release", "SnapshotError", "SnapshotView", "SnapshotWheel", "UntrustedAnswer",
           "load_release", "open_snapshot"]

IPLD_RAW = "application/vnd.ipld.raw"
MAX_BLOCK = 2 * 1024 * 1024  # the unixfs-v1-2025 profile's blocks are at most 1 MiB (+ a dag-pb header)


class SnapshotError(WheelproofError):
    """The snapshot cannot be opened or does not hold what was asked."""


class UntrustedAnswer(IntegrityError):
    """An untrusted gateway answered with bytes that are not the requested block."""


@dataclass(frozen=True)
class Release:
    """A release manifest whose signature verified under the trusted key."""

    path: Path
    sequence: int
    root: CID
    previous_root: str | None
    manifest: dict[str, Any]


def load_release(manifest: Path, trusted_key: Path) -> Release:
    """Verify ``manifest`` (and ``manifest.minisig`` beside it) with the key in ``trusted_key``."""
    try:
        public = PublicKey.parse(trusted_key.read_text())
    except (OSError, ValueError, SignatureError) as e:
        raise SnapshotError(f"{trusted_key}: not a readable minisign public key ({e})") from e
    try:
        doc = Releases(manifest.parent.parent).verify_manifest(manifest, public)
    except OSError as e:
        raise SnapshotError(f"{manifest}: {e}") from e
    except (ReleaseError, ValueError) as e:
        raise SnapshotError(f"{manifest}: the release does not verify under {trusted_key}: {e}") from e
    try:
        root = CID.parse(doc["root"])
        previous = (doc.get("previous") or {}).get("root")
        return Release(manifest, int(doc["sequence"]), root, previous, doc)
    except (KeyError, TypeError, ValueError, CIDError) as e:
        raise SnapshotError(f"{manifest}: field 'root'/'sequence': {e}") from e


class GatewayBlocks:
    """Blocks fetched as ``GET <upstream>/ipfs/<cid>?format=raw`` and verified against ``cid``.

    Verified blocks are kept in memory (a CID names its bytes forever). ``known`` maps the digests of
    other roots (an older release) to a name, so a stale answer is reported as such.
    """

    def __init__(self, upstream: str, timeout: float = 30.0, known: dict[str, str] | None = None):
        self.upstream = upstream.rstrip("/")
        self.timeout = timeout
        self.known = dict(known or {})
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.fetched = 0

    def has(self, digest: str) -> bool:
        return True  # whether it has it is the gateway's answer, checked in read_bytes

    def read_bytes(self, digest: str) -> bytes:
        with self._lock:
            if digest in self._cache:
                return self._cache[digest]
        cid = CID(1, 0x55, bytes.fromhex(digest))  # the raw path is codec-independent: /ipfs/<cid> of any codec
        url = f"{self.upstream}/ipfs/{cid}?format=raw"
        request = urllib.request.Request(url, headers={"Accept": IPLD_RAW})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                block = response.read(MAX_BLOCK + 1)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise NotFound(f"the gateway {self.upstream} does not have block {cid}") from None
            raise StoreError(f"the gateway {self.upstream} answered {e.code} for block {cid}") from e
        except (urllib.error.URLError, OSError) as e:
            raise StoreError(f"the gateway {self.upstream} is unreachable ({e})") from e
        if len(block) > MAX_BLOCK:
            raise UntrustedAnswer(f"the gateway {self.upstream} answered block {cid} with more than "
                                  f"{MAX_BLOCK} bytes: refused")
        actual = hashlib.sha256(block).hexdigest()
        if actual != digest:
            what = self.known.get(actual)
            why = f"stale content: it is {what}" if what else "altered or substituted content"
            raise UntrustedAnswer(f"the gateway {self.upstream} answered block {cid} with bytes whose "
                                  f"SHA-256 is {actual}, not the CID's {digest} ({why}): refused")
        with self._lock:
            self._cache[digest] = block
            self.fetched += 1
        return block


@dataclass(frozen=True)
class SnapshotWheel:
    project: str
    filename: str
    sha256: str


class SnapshotView:
    """Files of one snapshot (the layout of docs/snapshots.md), read through a verifying DagReader."""

    def __init__(self, root: CID, blocks: BlockSource, label: str):
        self.root = root
        self.blocks = blocks
        self.reader = DagReader(blocks)
        self.label = label
        self._pages: dict[str, list[SnapshotWheel]] = {}

    def read(self, path: str) -> bytes:
        segments = [s for s in path.split("/") if s]
        try:
            node = self.reader.resolve(self.root, segments)
        except NotFound as e:
            raise SnapshotError(f"{self.label}: {e}") from None
        if node.is_dir:
            raise SnapshotError(f"{self.label}: /{path} is a directory")
        return b"".join(self.reader.read(node, 0, self.reader.size(node)))

    def wheels(self, project: str) -> list[SnapshotWheel]:
        """The project's wheels from its PEP 691 page (empty if the snapshot does not have it)."""
        name = canonicalize_name(project)
        if name not in self._pages:
            if not name:
                self.reader.resolve(self.root, ["simple"])
                return []
            try:
                page = json.loads(self.read(f"simple/{name}/index.json"))
            except SnapshotError:
                self._pages[name] = []
                return []
            except ValueError as e:
                raise SnapshotError(f"{self.label}: simple/{name}/index.json: {e}") from e
            self._pages[name] = [SnapshotWheel(name, f["filename"], f["hashes"]["sha256"])
                                 for f in page.get("files", []) if f["filename"].endswith(".whl")]
        return self._pages[name]

    def wheel_bytes(self, wheel: SnapshotWheel) -> bytes:
        data = self.read(f"simple/{wheel.project}/{wheel.filename}")
        if hashlib.sha256(data).hexdigest() != wheel.sha256:
            raise SnapshotError(f"{self.label}: simple/{wheel.project}/{wheel.filename} does not have the "
                                "SHA-256 its index page gives")
        return data

    def version_of(self, wheel: SnapshotWheel) -> str:
        try:
            return str(parse_wheel_filename(wheel.filename)[1])
        except InvalidWheelFilename as e:
            raise SnapshotError(f"{self.label}: {e}") from e


def open_snapshot(snapshot: str, *, gateway: str | None = None, trusted_key: Path | None = None,
                  release: Path | None = None, store: Store | None = None) -> SnapshotView:
    """``snapshot`` is a root CID or a release manifest (which needs ``trusted_key``).

    Blocks come from ``gateway`` (untrusted, verified) when given, else from the local store. With
    ``release`` too, the CID must be that release's root.
    """
    rel = None
    path = Path(snapshot)
    if snapshot.endswith(".json") or path.is_file():
        release, snapshot = path, ""
    if release is not None:
        if trusted_key is None:
            raise SnapshotError(f"{release}: a release is only accepted with --trusted-key (the release key's "
                                "public key, obtained out of band)")
        rel = load_release(release, trusted_key)
    if snapshot:
        try:
            root = CID.parse(snapshot)
        except CIDError as e:
            raise SnapshotError(f"--snapshot {snapshot!r}: not a CID or a release manifest ({e})") from e
        if rel is not None and root != rel.root:
            raise SnapshotError(f"--snapshot {root} is not the root of release {rel.sequence} ({rel.root}, "
                                f"{rel.path})")
    else:
        assert rel is not None
        root = rel.root
    if gateway:
        known = {}
        if rel is not None and rel.previous_root:
            try:
                known[CID.parse(rel.previous_root).hex_digest] = (
                    f"release {rel.sequence - 1}'s root {rel.previous_root}")
            except CIDError:
                pass
        blocks: BlockSource = GatewayBlocks(gateway, known=known)
        label = f"snapshot {root} via {gateway}"
    else:
        blocks = store or Store()
        label = f"snapshot {root}"
    return SnapshotView(root, blocks, label)
