"""A snapshot: the published set as a PEP 503/691/658 simple index in one UnixFS DAG.

Tree (deterministic: the same declarations and wheels give the same bytes and root CID anywhere)::

    index.html                          the snapshot's state, for people
    wheelproof.json                     what was published and why (verdicts, derivation ids, extras)
    simple/index.html, index.json       every project (PEP 503 HTML, PEP 691 JSON)
    simple/<name>/index.html            relative links with #sha256, data-requires-python,
    simple/<name>/index.json            data-dist-info-metadata and data-core-metadata (PEP 658/714)
    simple/<name>/<wheel>               the wheel, once
    simple/<name>/<wheel>.metadata      its core metadata (PEP 658)

Publishing policy (which bytes go out): the upstream wheel's bytes, when the rebuild is
``identical`` (the same bytes) or ``equivalent`` (same members and contents, only zip metadata
differs); for ``differs`` only if the declaration says ``accept-differs = "reason"``; never for a
failed or missing build. ``rebuild = false`` (with a reason) publishes upstream's bytes unrebuilt.

Verdicts are per wheel: only the wheel the rebuild was compared with carries the rebuild's verdict;
every other wheel of the project is ``not-rebuilt``, with the reason (another platform; ``rebuild =
false`` and its reason), and an accepted ``differs`` carries its ``accept-differs`` reason. Status page,
``wheelproof.json`` (``verdict``, ``reason``) and each file of the PEP 691 project JSON
(``_wheelproof:verdict``, a PEP 700 private key) all say so.

Each project's offered extras (its declaration's ``extras``: those whose closure the set satisfies,
see pipeline/model/extras.py) are listed on the status page, in ``wheelproof.json`` and in the PEP 691
project JSON under the key ``_wheelproof:extras``: PEP 691 lets responses carry keys clients do not
understand (clients must ignore them), and PEP 700 reserves keys with a leading underscore, at any level,
for the index server's private use, so no future standard will give this key another meaning.

Rebuild attestations (docs/challenge.md): every builder's DSSE envelope for each published project's
derivation that verifies with its key is in the tree at ``attestations/<name>/<derivation id>.<key
id>.intoto.json``, the keys at ``builders/<key id>.pem``; the project's PEP 691 JSON lists them under
``_wheelproof:attestations`` (each ``url`` relative to the page, ``sha256`` of the envelope, ``builder-key``,
``derivation-id``, ``rebuilt-sha256``, ``verdict``), and ``wheelproof.json`` under ``attestations``, which
``doit publish`` logs. Projects without one carry no such key and no such directory.

Blocks go into the store (a CID's sha2-256 digest is the object name), so
consecutive snapshots share every unchanged block. The snapshot records its CAR's plan
(pipeline/export/carcopy.py); the CAR itself is made on demand (pipeline/export/carmake.py, by default
``<store>/cars/<cid>.car``).
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from pipeline.export import carcopy
from pipeline.export.fileimports import FileImports
from pipeline.export.ipfs.blocks import BlockSource
from pipeline.export.ipfs.dag import depth_first
from pipeline.export.ipfs.multiformats import CID
from pipeline.export.ipfs.unixfs import V0_2015, V1_2025, Entry, Importer, Tree
from pipeline.model.declaration import Artifact, Declaration
from pipeline.model.errors import IntegrityError, StoreError
from pipeline.model.records import SNAPSHOT_KIND, BuildRecord, CarRef, SnapshotRecord, decode, encode
from pipeline.store.local import Store

API_VERSION = "1.1"
TAG_KIND = "snapshot-tags"
JSON_INDEX = "index.json"  # the PEP 691 form of each index.html, beside it
PUBLISHABLE = {"identical", "equivalent"}
EXTRAS_KEY = "_wheelproof:extras"  # PEP 700: a leading underscore marks an index server's private key
ATTESTATIONS_KEY = "_wheelproof:attestations"


@dataclass(frozen=True)
class PublishedAttestation:
    """One builder's verified attestation of a published project's derivation."""

    project: str
    derivation_id: str
    key_id: str
    envelope: bytes
    sha256: str
    rebuilt_sha256: str | None
    verdict: str

    @property
    def filename(self) -> str:
        return f"{self.derivation_id}.{self.key_id}.intoto.json"

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "derivation_id": self.derivation_id, "builder_key": self.key_id,
                "sha256": self.sha256, "rebuilt_sha256": self.rebuilt_sha256, "verdict": self.verdict,
                "path": f"attestations/{self.project}/{self.filename}"}
VERDICT_KEY = "_wheelproof:verdict"  # per file in the PEP 691 project JSON: {"verdict", "reason"}


def wheel_verdict(d: Declaration, record: BuildRecord, wheel: Artifact) -> tuple[str, str | None]:
    """The verdict one published wheel carries, and why: only the wheel the rebuild was compared with
    carries the rebuild's verdict; every other wheel is ``not-rebuilt`` with the reason."""
    if d.no_rebuild is not None:
        return "not-rebuilt", f"upstream's bytes, not rebuilt here (rebuild = false): {d.no_rebuild}"
    if wheel.filename != record.upstream.filename:
        return "not-rebuilt", (f"upstream's bytes for another platform; the rebuild here, compared with "
                               f"{record.upstream.filename}, was {record.verdict}")
    if record.verdict == "differs":
        return "differs", f"published although it differs (accept-differs): {d.accept_differs}"
    return record.verdict, None


@dataclass(frozen=True)
class PublishedWheel:
    project: str
    version: str
    wheel: Artifact
    requires_python: str | None
    metadata_sha256: str
    verdict: str
    derivation_id: str
    content_id_v0: str  # kubo's default import of the wheel: the IPWHL-style content-id
    extras: tuple[str, ...] = ()  # the extras the set offers for this project (PEP 685 names)
    reason: str | None = None     # why this wheel's verdict (not-rebuilt; an accepted difference)


class SnapshotRefused(Exception):
    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("\n".join(reasons))


def select(decls: dict[str, Declaration], records: Mapping[str, BuildRecord],
           metadata_for: Callable[[Declaration, Artifact], bytes],
           content_id: Callable[[Artifact], str]) -> list[PublishedWheel]:
    """Apply the publishing policy; refuse (listing every reason) if any project cannot be published.

    ``content_id`` is the wheel's ``unixfs-v0-2015`` CID (kubo's default import)."""
    out, refused = [], []
    for name, d in sorted(decls.items()):
        record = records.get(name)
        if record is None:
            refused.append(f"{d.path}: not built (run `doit build:{name}`)")
            continue
        verdict = record.verdict
        if verdict == "failed":
            refused.append(f"{d.path}: the build failed")
            continue
        if verdict == "not-rebuilt" and d.no_rebuild is None:
            refused.append(f"{d.path}: the record says not rebuilt, but the declaration does not say rebuild = false")
            continue
        if verdict not in PUBLISHABLE and verdict != "not-rebuilt" and not d.accept_differs:
            refused.append(f"{d.path}: the rebuild {verdict} from upstream and the declaration has no "
                           "accept-differs reason")
            continue
        for w in d.wheels:
            meta = metadata_for(d, w)
            wv, why = wheel_verdict(d, record, w)
            out.append(PublishedWheel(
                name, d.version, w, d.requires_python, hashlib.sha256(meta).hexdigest(), wv,
                record.derivation_id, content_id(w), tuple(sorted(d.extras)), why))
    if refused:
        raise SnapshotRefused(refused)
    return out


def _page(title: str, body: list[str]) -> bytes:
    lines = ["<!DOCTYPE html>", "<html>", "  <head>",
             f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
             f"    <title>{html.escape(title)}</title>", "  </head>", "  <body>",
             f"    <h1>{html.escape(title)}</h1>", *("    " + b for b in body), "  </body>", "</html>", ""]
    return "\n".join(lines).encode()


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def project_pages(project: str, wheels: list[PublishedWheel],
                  attestations: Sequence[PublishedAttestation] = ()) -> tuple[bytes, bytes]:
    """PEP 503 HTML and PEP 691 JSON for one project."""
    anchors, files = [], []
    for w in sorted(wheels, key=lambda w: w.wheel.filename):
        attrs = f'href="{html.escape(w.wheel.filename)}#sha256={w.wheel.sha256}"'
        if w.requires_python:
            attrs += f' data-requires-python="{html.escape(w.requires_python, quote=True)}"'
        attrs += f' data-dist-info-metadata="sha256={w.metadata_sha256}"'
        attrs += f' data-core-metadata="sha256={w.metadata_sha256}"'
        anchors.append(f"<a {attrs}>{html.escape(w.wheel.filename)}</a><br>")
        entry: dict[str, Any] = {
            "filename": w.wheel.filename, "url": w.wheel.filename, "hashes": {"sha256": w.wheel.sha256},
            "core-metadata": {"sha256": w.metadata_sha256}, "dist-info-metadata": {"sha256": w.metadata_sha256},
            "size": w.wheel.size, "yanked": False,
        }
        if w.requires_python:
            entry["requires-python"] = w.requires_python
        entry[VERDICT_KEY] = {"verdict": w.verdict, **({"reason": w.reason} if w.reason else {})}
        files.append(entry)
    doc = {"meta": {"api-version": API_VERSION}, "name": project, "files": files,
           "versions": sorted({w.version for w in wheels}),
           EXTRAS_KEY: sorted({e for w in wheels for e in w.extras})}
    if attestations:
        doc[ATTESTATIONS_KEY] = [
            {"url": f"../../attestations/{a.project}/{a.filename}", "sha256": a.sha256, "builder-key": a.key_id,
             "derivation-id": a.derivation_id, "rebuilt-sha256": a.rebuilt_sha256, "verdict": a.verdict}
            for a in sorted(attestations, key=lambda a: a.filename)]
    return _page(f"Links for {project}", anchors), _json(doc)


def status_page(published: list[PublishedWheel]) -> bytes:
    rows = [f"<tr><td><a href=\"simple/{w.project}/\">{w.project}</a></td><td>{html.escape(w.version)}</td>"
            f"<td class=\"{w.verdict}\">{w.verdict}</td><td><code>{w.wheel.filename}</code></td>"
            f"<td><code>{w.derivation_id[:12]}</code></td>"
            f"<td>{html.escape(', '.join(w.extras)) or '&ndash;'}</td>"
            f"<td>{html.escape(w.reason or '') or '&ndash;'}</td></tr>" for w in published]
    counts: dict[str, int] = {}
    for w in published:
        counts[w.verdict] = counts.get(w.verdict, 0) + 1
    summary = ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
    style = ("<style>body{font-family:sans-serif}td{padding:2px 8px}.identical{background:#c8f0c8}"
             ".equivalent{background:#e8f4c0}.differs{background:#f8d8a8}.not-rebuilt{background:#e0e0e0}</style>")
    body = [style, f"<p>{len({w.project for w in published})} projects, {len(published)} wheels: {summary}. "
            "Install with <code>pip install --index-url &lt;gateway&gt;/ipfs/&lt;this CID&gt;/simple/ NAME</code>."
            "</p>", "<table>", "<tr><th>project</th><th>version</th><th>rebuild verdict</th><th>wheel</th>"
            "<th>derivation</th><th>extras offered</th><th>why</th></tr>", *rows, "</table>"]
    return _page("Wheelproof snapshot", body)


def render(published: list[PublishedWheel], wheel_path: Callable[[Artifact], Path | Entry],
           metadata: Callable[[PublishedWheel], bytes], attestations: Sequence[PublishedAttestation] = (),
           builder_keys: Mapping[str, bytes] | None = None) -> Tree:
    """The snapshot's tree; a wheel is its file, or its already imported :class:`Entry`."""
    by_project: dict[str, list[PublishedWheel]] = {}
    for w in published:
        by_project.setdefault(w.project, []).append(w)
    simple: Tree = {}
    by_attested: dict[str, list[PublishedAttestation]] = {}
    for a in attestations:
        by_attested.setdefault(a.project, []).append(a)
    for project, wheels in sorted(by_project.items()):
        page, doc = project_pages(project, wheels, by_attested.get(project, ()))
        entries: Tree = {"index.html": page, JSON_INDEX: doc}
        for w in wheels:
            entries[w.wheel.filename] = wheel_path(w.wheel)
            entries[w.wheel.filename + ".metadata"] = metadata(w)
        simple[project] = entries
    root_anchors = [f'<a href="{p}/">{p}</a><br>' for p in sorted(by_project)]
    simple["index.html"] = _page("Simple index", root_anchors)
    simple[JSON_INDEX] = _json({"meta": {"api-version": API_VERSION},
                                "projects": [{"name": p} for p in sorted(by_project)]})
    manifest = {"schema": 1, "published": [
        {"project": w.project, "version": w.version, "filename": w.wheel.filename, "sha256": w.wheel.sha256,
         "verdict": w.verdict, "derivation_id": w.derivation_id, "content-id": w.content_id_v0,
         "extras": list(w.extras), **({"reason": w.reason} if w.reason else {})}
        for w in published]}
    tree: Tree = {"index.html": status_page(published), "simple": simple}
    if attestations:
        manifest["attestations"] = [a.to_json() for a in sorted(attestations, key=lambda a: (a.project, a.filename))]
        tree["attestations"] = {p: {a.filename: a.envelope for a in items} for p, items in by_attested.items()}
        tree["builders"] = {f"{k}.pem": pem for k, pem in sorted((builder_keys or {}).items())
                            if any(a.key_id == k for a in attestations)}
    tree["wheelproof.json"] = _json(manifest)
    return tree


@dataclass(frozen=True)
class Snapshot:
    root: CID
    car_path: Path       # where ``python -m pipeline car`` makes the CAR by default (not made by a snapshot)
    car_size: int
    car_plan: str        # store digest of the CAR's plan
    blocks: int
    new_blocks: int
    manifest: str  # store digest of the snapshot manifest
    car_sha256: str | None = None  # known only from an older record that wrote its CAR


def car_path(store: Store, root: CID) -> Path:
    """Where the CAR of ``root`` is made by default."""
    return store.root / "cars" / f"{root}.car"


def iter_blocks(store: BlockSource, root: CID) -> Iterator[tuple[CID, bytes]]:
    """Every block of the DAG under ``root``, depth-first, each once, read verified from the store;
    one block is held at a time (the CAR is written from this stream)."""
    for cid, block in depth_first(root, lambda c: store.read_bytes(c.hex_digest)):
        assert block is not None  # every block is read here
        yield cid, block


def walk(store: BlockSource, root: CID) -> list[tuple[CID, bytes]]:
    """Every block of the DAG under ``root`` (depth-first, each once), as a list (small DAGs, tests)."""
    return list(iter_blocks(store, root))


def _record_at(store: Store, digest: str | None, where: str) -> SnapshotRecord | None:
    if digest is None:
        return None
    try:
        return decode(SnapshotRecord, store.read_json(digest), where)
    except (ValueError, IntegrityError, StoreError, zstandard.ZstdError):
        return None


def snapshot_record(store: Store, root: CID | None = None) -> SnapshotRecord | None:
    """The record of snapshot ``root`` (default: the latest), checked field by field; None if none is."""
    if root is None:
        return _record_at(store, store.get_ref(TAG_KIND, "latest"), f"refs/{TAG_KIND}/latest")
    record = _record_at(store, store.get_ref(SNAPSHOT_KIND, str(root)), f"refs/{SNAPSHOT_KIND}/{root}")
    return record if record is not None and record.root == str(root) else None


def build(store: Store, tree: Tree, log: Callable[[str], None] = print) -> Snapshot:
    """Import ``tree`` into the store's blocks, record the CAR's plan and root the snapshot.

    With the root already a snapshot whose plan is stored, nothing is walked. Otherwise the plan is
    the depth-first walk of the DAG (:func:`pipeline.export.carcopy.plan_of`: dag-pb nodes read, raw
    leaves' lengths from their objects' sizes), stored, and named by the new record. The CAR's bytes
    are not written here (``python -m pipeline car``, pipeline/export/carmake.py)."""
    counts = {"blocks": 0, "new": 0}

    def put(cid: CID, block: bytes) -> None:
        counts["blocks"] += 1
        if not store.has(cid.hex_digest):
            counts["new"] += 1
            store.put_bytes(block)

    with store.shared():
        root = Importer(V1_2025, put).tree(tree).cid
        existing = snapshot_record(store, root)
        plan = None
        if existing is not None and existing.car.index is not None:
            plan = carcopy.load_plan(store, existing.car.index, existing.root, existing.car.size)
        if existing is not None and plan is not None:
            manifest = store.get_ref(SNAPSHOT_KIND, str(root))
            assert manifest is not None and existing.car.index is not None
            store.set_ref(TAG_KIND, "latest", manifest)
            log(f"snapshot: {len(plan.sections)} blocks, unchanged: reusing its CAR plan")
            return Snapshot(root, car_path(store, root), plan.size, existing.car.index, len(plan.sections),
                            counts["new"], manifest, existing.car.sha256)
        plan, digests = carcopy.plan_of(store, root)
        plan_digest = carcopy.save_plan(store, plan)
        # an older record of this root wrote its CAR: the same plan gives the same bytes, keep its SHA-256
        known = existing.car.sha256 if existing is not None and existing.car.size == plan.size else None
        record = SnapshotRecord(str(root), CarRef(plan.size, plan_digest, known),
                                tuple(sorted(digests | {plan_digest})))
        manifest = store.put_json(encode(record))
        store.set_ref(SNAPSHOT_KIND, str(root), manifest)
        store.set_ref(TAG_KIND, "latest", manifest)
    log(f"snapshot: {len(plan.sections)} blocks ({counts['new']} new in the store)")
    return Snapshot(root, car_path(store, root), plan.size, plan_digest, len(plan.sections), counts["new"],
                    manifest, known)


def publish(store: Store, decls: dict[str, Declaration], records: Mapping[str, BuildRecord],
            metadata_for: Callable[[Declaration, Artifact], bytes],
            log: Callable[[str], None] = print,
            subtrees: Callable[[Tree, list[PublishedWheel]], Tree] | None = None,
            attestations: Callable[[list[PublishedWheel]], tuple[Sequence[PublishedAttestation],
                                                                  Mapping[str, bytes]]] | None = None
            ) -> tuple[Snapshot, list[PublishedWheel]]:
    """Policy, tree and DAG in one step: what ``doit snapshot`` does once builds and checks pass.

    ``subtrees`` (the other formats, :mod:`pipeline.export.formats`) adds top-level subtrees to the
    rendered tree; it may not replace one."""
    content_ids = FileImports(store, V0_2015, store_blocks=False)
    wheels = FileImports(store, V1_2025)
    published = select(decls, records, metadata_for, lambda w: str(content_ids.entry(w.sha256).cid))
    log(f"snapshot: importing {len(published)} wheels of {len(decls)} projects")
    attested, keys = attestations(published) if attestations is not None else ((), {})
    if attested:
        log(f"snapshot: {len(attested)} attestations by {len({a.key_id for a in attested})} builders")
    tree = render(published, lambda a: wheels.entry(a.sha256), lambda w: store.read_bytes(w.metadata_sha256),
                  attested, keys)
    log(f"snapshot: {wheels.hits} wheels imported before, {wheels.misses} imported now")
    if subtrees is not None:
        extra = subtrees(tree, published)
        if clash := sorted(set(extra) & set(tree)):
            raise ValueError(f"snapshot subtrees would replace {clash}")
        tree.update(extra)
    return build(store, tree, log), published
