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

Blocks go into the store (a CID's sha2-256 digest is the object name), so
consecutive snapshots share every unchanged block; the CAR is written to ``<store>/cars/<cid>.car``.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.export.ipfs import car, dagpb
from pipeline.export.ipfs.blocks import BlockSource
from pipeline.export.ipfs.multiformats import CID, DAG_PB
from pipeline.export.ipfs.unixfs import V0_2015, V1_2025, Importer, Tree, cid_of_file
from pipeline.model.declaration import Artifact, Declaration
from pipeline.model.records import SNAPSHOT_KIND, BuildRecord, CarRef, SnapshotRecord, encode
from pipeline.store.local import Store, sha256_file

API_VERSION = "1.1"
TAG_KIND = "snapshot-tags"
JSON_INDEX = "index.json"  # the PEP 691 form of each index.html, beside it
PUBLISHABLE = {"identical", "equivalent"}
EXTRAS_KEY = "_wheelproof:extras"  # PEP 700: a leading underscore marks an index server's private key
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
           wheel_bytes: Callable[[Artifact], bytes]) -> list[PublishedWheel]:
    """Apply the publishing policy; refuse (listing every reason) if any project cannot be published."""
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
                record.derivation_id, str(cid_of_file(wheel_bytes(w), V0_2015)), tuple(sorted(d.extras)), why))
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


def project_pages(project: str, wheels: list[PublishedWheel]) -> tuple[bytes, bytes]:
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


def render(published: list[PublishedWheel], wheel_path: Callable[[Artifact], Path],
           metadata: Callable[[PublishedWheel], bytes]) -> Tree:
    by_project: dict[str, list[PublishedWheel]] = {}
    for w in published:
        by_project.setdefault(w.project, []).append(w)
    simple: Tree = {}
    for project, wheels in sorted(by_project.items()):
        page, doc = project_pages(project, wheels)
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
    return {"index.html": status_page(published), "wheelproof.json": _json(manifest), "simple": simple}


@dataclass(frozen=True)
class Snapshot:
    root: CID
    car_path: Path
    car_size: int
    car_sha256: str
    blocks: int
    new_blocks: int
    manifest: str  # store digest of the snapshot manifest


def walk(store: BlockSource, root: CID) -> list[tuple[CID, bytes]]:
    """Every block of the DAG under ``root`` (depth-first, each once), read verified from the store."""
    out, seen, stack = [], set(), [root]
    while stack:
        cid = stack.pop()
        if cid.digest in seen:
            continue
        seen.add(cid.digest)
        block = store.read_bytes(cid.hex_digest)
        out.append((cid, block))
        if cid.codec == DAG_PB:
            stack.extend(reversed([link.cid for link in dagpb.decode(block).links]))
    return out


def build(store: Store, tree: Tree, log: Callable[[str], None] = print) -> Snapshot:
    """Import ``tree`` into the store's blocks, write the CAR and root the snapshot."""
    counts = {"blocks": 0, "new": 0}

    def put(cid: CID, block: bytes) -> None:
        counts["blocks"] += 1
        if not store.has(cid.hex_digest):
            counts["new"] += 1
            store.put_bytes(block)

    with store.shared():
        root = Importer(V1_2025, put).tree(tree).cid
        blocks = walk(store, root)
        cars = store.root / "cars"
        cars.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=store.tmp, prefix="car-")
        with os.fdopen(fd, "wb") as f:
            size = car.write(f, [root], blocks)
            f.flush()
            os.fsync(f.fileno())
        car_path = cars / f"{root}.car"
        os.replace(tmp, car_path)
        car_sha, _ = sha256_file(car_path)
        record = SnapshotRecord(str(root), CarRef(car_sha, size), tuple(sorted({c.hex_digest for c, _ in blocks})))
        manifest = store.put_json(encode(record))
        store.set_ref(SNAPSHOT_KIND, str(root), manifest)
        store.set_ref(TAG_KIND, "latest", manifest)
    log(f"snapshot: {len(blocks)} blocks ({counts['new']} new in the store)")
    return Snapshot(root, car_path, size, car_sha, len(blocks), counts["new"], manifest)


def publish(store: Store, decls: dict[str, Declaration], records: Mapping[str, BuildRecord],
            metadata_for: Callable[[Declaration, Artifact], bytes],
            log: Callable[[str], None] = print,
            subtrees: Callable[[Tree, list[PublishedWheel]], Tree] | None = None
            ) -> tuple[Snapshot, list[PublishedWheel]]:
    """Policy, tree and DAG in one step: what ``doit snapshot`` does once builds and checks pass.

    ``subtrees`` (the other formats, :mod:`pipeline.export.formats`) adds top-level subtrees to the
    rendered tree; it may not replace one."""
    published = select(decls, records, metadata_for, lambda w: store.read_bytes(w.sha256))
    log(f"snapshot: importing {len(published)} wheels of {len(decls)} projects")
    tree = render(published, lambda a: store.verified_path(a.sha256), lambda w: store.read_bytes(w.metadata_sha256))
    if subtrees is not None:
        extra = subtrees(tree, published)
        if clash := sorted(set(extra) & set(tree)):
            raise ValueError(f"snapshot subtrees would replace {clash}")
        tree.update(extra)
    return build(store, tree, log), published
