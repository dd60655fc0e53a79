r"""A BitTorrent torrent of a snapshot: BEP 52 (v2) hybrid with BEP 3 (v1), made by libtorrent.

The torrent's name is the snapshot's root CID and its files are the snapshot's tree, so a client
that downloads it into a directory gets ``<dir>/<root CID>/…``, the same paths the gateway serves
under ``/ipfs/<root CID>/…``. That is also why one BEP 19 web seed, ``<gateway>/ipfs/``, serves
every piece (a web seed's file URL is the seed URL + torrent name + path). Hybrid: v1 clients use the
SHA-1 pieces (files padded to piece boundaries, BEP 47), v2 clients the per-file SHA-256 Merkle trees
(``pieces root``); libtorrent makes and hashes both halves, :func:`make` says why it makes them apart.
A snapshot's torrent is :func:`assemble`\ d from each file's hashes instead (cached by content,
:mod:`pipeline.export.torrentfiles`), byte for byte :func:`make`'s, so only new files are hashed.
BEP 30 is superseded by BEP 52 and not used.

Reproducible: a fixed piece length, no creation date, a fixed creator, files in BEP 52's order;
the same snapshot and gateway give the same ``.torrent`` bytes and info-hashes. The file is kept
beside the CAR, ``<store>/cars/<root CID>.torrent``; :func:`release_field` is what a release
manifest records (both info-hashes, every file's pieces root).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.ipfs.dag import Node
from pipeline.export.ipfs.dagpb import Link
from pipeline.export.ipfs.gateway import DagReader
from pipeline.export.ipfs.multiformats import CID, RAW
from pipeline.export.torrentfiles import FileHashCache, FileHashError, FileHashes, file_hashes
from pipeline.model.errors import WheelproofError
from pipeline.store.local import Store, atomic_write

__all__ = ["PIECE_LENGTH", "CREATOR", "TorrentError", "TorrentInfo", "assemble", "make", "read",
           "release_field", "release_field_beside", "snapshot_files", "torrent_path", "unpack", "write"]

PIECE_LENGTH = 256 * 1024
CREATOR = "wheelproof"


class TorrentError(WheelproofError):
    pass


@dataclass(frozen=True)
class TorrentInfo:
    name: str
    info_hash_v1: str
    info_hash_v2: str
    piece_length: int
    total_size: int
    web_seeds: tuple[str, ...]
    pieces_roots: dict[str, str]  # path inside the snapshot → BEP 52 pieces root (hex)


def torrent_path(store: Store, root: CID) -> Path:
    return store.root / "cars" / f"{root}.torrent"


def _entries(reader: DagReader, cid: CID, node: Node) -> Iterator[tuple[str, Link]]:
    """A directory's entries, each name one path component that stays inside the snapshot."""
    for name, link in reader.entries(node):
        if not name or "/" in name or name in (".", ".."):
            raise TorrentError(f"{cid}: a directory entry named {name!r} would leave the snapshot")
        yield name, link


def _write(reader: DagReader, node: Node, path: Path) -> None:
    """A file node's bytes to ``path``, every block verified as it is read."""
    with open(path, "wb") as f:
        for chunk in reader.read(node, 0, reader.size(node)):
            f.write(chunk)


def unpack(store: Store, root: CID, dest: Path) -> Path:
    """Write the snapshot's files under ``dest/<root CID>/`` (every block verified as it is read)."""
    reader = DagReader(store)
    top = dest / str(root)

    def walk(cid: CID, here: Path) -> None:
        node = reader.node(cid)
        if node.is_dir:
            here.mkdir(parents=True, exist_ok=True)
            for name, link in _entries(reader, cid, node):
                walk(link.cid, here / name)
            return
        _write(reader, node, here)

    walk(root, top)
    return top


def _bep52_order(entries: list[Any]) -> list[Any]:
    """The files in BEP 52's order: the ``file tree`` is a bencoded dictionary per directory, so its
    keys (and a client's walk of it) are ordered per path component, by bytes. Python orders ``str``
    by code point, which is the UTF-8 byte order."""
    return sorted(entries, key=lambda e: e.filename.split("/"))


def _with_tail_padding(lt: Any, ordered: list[Any], top: str) -> list[Any]:
    """BEP 47 pad files after each file that does not end on a piece boundary (the last one too), so
    every file starts a piece, as BEP 52 requires of a hybrid's v1 list; libtorrent's own rule (no pad
    after an empty file, none in a one-file torrent)."""
    if len(ordered) < 2:
        return list(ordered)
    out = []
    for entry in ordered:
        out.append(entry)
        if entry.size % PIECE_LENGTH:
            pad = PIECE_LENGTH - entry.size % PIECE_LENGTH
            out.append(lt.create_file_entry(f"{top}/.pad/{pad}", pad, lt.file_storage.flag_pad_file, 0, ""))
    return out


def _creator(lt: Any, files: list[Any], flags: Any, web_seed: str) -> Any:
    ct = lt.create_torrent(files, PIECE_LENGTH, flags=flags)
    ct.set_creator(CREATOR)
    ct.set_creation_date(0)
    ct.add_url_seed(web_seed)
    return ct


def _generate(lt: Any, files: list[Any], flags: Any, directory: Path, web_seed: str) -> dict[bytes, Any]:
    try:
        ct = _creator(lt, files, flags, web_seed)
        lt.set_piece_hashes(ct, str(directory.parent))
    except RuntimeError as e:
        raise TorrentError(f"{directory}: libtorrent cannot make a torrent of it: {e}") from e
    torrent: dict[bytes, Any] = ct.generate()
    return torrent


def make(directory: Path, web_seed: str) -> bytes:
    """The hybrid v1+v2 torrent of ``directory`` (its name is the directory's name).

    libtorrent 2.1 cannot make the hybrid itself for every tree: its ``create_torrent`` always sorts a
    v1+v2 torrent's files by whole path, where ``pydantic-core/…`` comes before ``pydantic/…`` (``-`` <
    ``/``), while BEP 52's ``file tree`` orders per component (``pydantic`` first), and its own loader
    then refuses the torrent ("the v1 and v2 file metadata does not match"). So libtorrent makes the two
    halves, each hashing the files itself: the v2 torrent (``file tree``, ``piece layers``), and the v1
    torrent of the same files listed in BEP 52's order with BEP 47 tail padding (``v1_only`` keeps the
    order it is given). The hybrid is the v2 torrent whose info dictionary also holds the v1 half's
    ``files`` and ``pieces`` (BEP 52, "Upgrade path"), bencoded by libtorrent; where libtorrent's own
    order is BEP 52's the bytes are exactly those of libtorrent's own hybrid. libtorrent then loads it,
    which checks that the v1 list and the v2 tree agree file by file."""
    import libtorrent as lt

    entries = lt.list_files(str(directory))
    if not entries:
        raise TorrentError(f"{directory}: nothing to put in a torrent")
    ordered = _bep52_order(entries)
    top = ordered[0].filename.split("/", 1)[0]
    v1 = _generate(lt, _with_tail_padding(lt, ordered, top), lt.create_torrent.v1_only, directory, web_seed)
    v2 = _generate(lt, entries, lt.create_torrent.v2_only, directory, web_seed)
    for key in (b"name", b"piece length"):
        if v1[b"info"][key] != v2[b"info"][key]:
            raise TorrentError(f"{directory}: libtorrent's v1 and v2 halves differ in {key.decode()!r}")
    hybrid = dict(v2)
    hybrid[b"info"] = {**v2[b"info"], b"files": v1[b"info"][b"files"], b"pieces": v1[b"info"][b"pieces"]}
    return _loadable(lt, hybrid, f"{directory}: ")


def _loadable(lt: Any, torrent: dict[bytes, Any], context: str) -> bytes:
    """``torrent`` bencoded by libtorrent, once libtorrent has loaded it back (which checks BEP 52's
    piece layers against their roots)."""
    data = bytes(lt.bencode(torrent))
    try:
        read(data)
    except TorrentError as e:
        raise TorrentError(f"{context}{e}") from e
    return data


def assemble(name: str, files: Sequence[tuple[str, FileHashes]], web_seed: str) -> bytes:
    """The hybrid torrent named ``name`` of ``files`` (path inside it, the file's hashes), with no file
    read: byte for byte what :func:`make` gives for a directory ``name`` holding those files.

    libtorrent makes the v1 half from the file list in BEP 52's order with BEP 47 tail padding (the
    same list :func:`make` hashes), given each piece's SHA-1 (``create_torrent.set_hash``): in that
    list every file starts a piece, so the pieces are each file's own in turn, and a padded tail's
    SHA-1 is the one cached; only a one-file torrent (no pad files) takes its unpadded tail's. The v2
    half is BEP 52's ``file tree`` (``length`` and, when not empty, ``pieces root`` per file) and
    ``piece layers``, merged as :func:`make` merges libtorrent's v2 torrent; libtorrent bencodes it,
    then loads it, which checks each piece layer against its pieces root and the v1 list against the
    v2 tree (:func:`read`)."""
    import libtorrent as lt

    if not files:
        raise TorrentError(f"{name}: nothing to put in a torrent")
    by_path: dict[str, FileHashes] = {}
    for rel, hashes in files:
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise TorrentError(f"{name}: a file named {rel!r} would leave the torrent")
        if f"{name}/{rel}" in by_path:
            raise TorrentError(f"{name}: {rel!r} is listed twice")
        hashes.check(PIECE_LENGTH, f"{name}/{rel}")
        by_path[f"{name}/{rel}"] = hashes
    ordered = _bep52_order([lt.create_file_entry(path, h.length, 0, 0, "") for path, h in by_path.items()])
    in_order = [by_path[e.filename] for e in ordered]
    if len(in_order) == 1 and in_order[0].v1_tail:
        pieces = in_order[0].v1_pieces[:-20] + in_order[0].v1_tail
    else:
        pieces = b"".join(h.v1_pieces for h in in_order)
    try:
        ct = _creator(lt, _with_tail_padding(lt, ordered, name), lt.create_torrent.v1_only, web_seed)
        if ct.num_pieces() * 20 != len(pieces):
            raise TorrentError(f"{name}: {len(pieces) // 20} piece hashes for {ct.num_pieces()} v1 pieces")
        for i in range(ct.num_pieces()):
            ct.set_hash(i, pieces[i * 20:(i + 1) * 20])
        v1: dict[bytes, Any] = ct.generate()
    except RuntimeError as e:
        raise TorrentError(f"{name}: libtorrent cannot make the torrent's v1 half: {e}") from e
    tree: dict[bytes, Any] = {}
    layers: dict[bytes, bytes] = {}
    for path, h in by_path.items():
        node = tree
        for part in path.split("/")[1:]:
            node = node.setdefault(part.encode(), {})
        node[b""] = {b"length": h.length, **({b"pieces root": h.pieces_root} if h.length else {})}
        if h.layer:
            layers[h.pieces_root] = h.layer
    hybrid = dict(v1)
    hybrid[b"info"] = {**v1[b"info"], b"file tree": tree, b"meta version": 2}
    hybrid[b"piece layers"] = layers  # libtorrent writes the key even when no file has a layer
    return _loadable(lt, hybrid, f"{name}: the torrent assembled from its files' hashes does not load: ")


def snapshot_files(store: Store, root: CID, cache: FileHashCache, tmp: Path) -> list[tuple[str, FileHashes]]:
    """Every file of the snapshot (its path under the root) with its torrent hashes: from ``cache`` by the
    file's CID, or else written to ``tmp`` from verified blocks, hashed by libtorrent and cached.

    Directory blocks and dag-pb file nodes are read (verified); a cached raw-leaf file is not read. A
    cached length must be the file's: its dag-pb node's, or a raw leaf's block size."""
    reader = DagReader(store)
    out: list[tuple[str, FileHashes]] = []

    def file(cid: CID, rel: str, node: Node | None) -> None:
        """``node``: the file's dag-pb node, already read; None for a raw leaf (not read unless hashed)."""
        hashes = cache.get(cid)
        if hashes is not None:
            try:  # a raw leaf is the whole file: its block's size, without reading it
                length = store.object_path(cid.hex_digest).stat().st_size if node is None else reader.size(node)
            except OSError as e:
                raise TorrentError(f"{root}/{rel}: block {cid} is not in the store: {e}") from e
            if hashes.length != length:
                raise TorrentError(f"{cache.where(cid)}: says {hashes.length} bytes, the file {rel} has {length}")
            out.append((rel, hashes))
            return
        scratch = tmp / "f" / "file"
        scratch.parent.mkdir(exist_ok=True)
        _write(reader, node if node is not None else reader.node(cid), scratch)
        try:
            hashes = file_hashes(scratch, PIECE_LENGTH)
        except FileHashError as e:
            raise TorrentError(f"{root}/{rel}: {e}") from e
        finally:
            scratch.unlink()
        cache.put(cid, hashes)
        out.append((rel, hashes))

    def walk(cid: CID, node: Node, rel: str) -> None:
        for name, link in _entries(reader, cid, node):
            child = reader.node(link.cid) if link.cid.codec != RAW else None
            if child is not None and child.is_dir:
                walk(link.cid, child, f"{rel}{name}/")
            else:
                file(link.cid, f"{rel}{name}", child)

    top = reader.node(root) if root.codec != RAW else None
    if top is None or not top.is_dir:
        raise TorrentError(f"{root}: a snapshot's root is a directory, this is a file")
    walk(root, top, "")
    return out


def read(data: bytes) -> TorrentInfo:
    import libtorrent as lt

    try:
        ti = lt.torrent_info(data)
    except (RuntimeError, TypeError) as e:
        raise TorrentError(f"not a torrent: {e}") from e
    hashes = ti.info_hashes()
    if not hashes.has_v1() or not hashes.has_v2():
        raise TorrentError(f"{ti.name()}: not a hybrid v1+v2 torrent")
    files = ti.files()
    roots = {}
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        path = files.file_path(i)
        inner = path.split(os.sep, 1)[1] if os.sep in path else path
        roots[inner] = files.root(i).to_bytes().hex()
    return TorrentInfo(ti.name(), str(hashes.v1), hashes.v2.to_bytes().hex(), ti.piece_length(), ti.total_size(),
                       tuple(w["url"] for w in ti.web_seeds()), dict(sorted(roots.items())))


def write(store: Store, root: CID, gateway: str,
          log: Callable[[str], None] | None = None) -> tuple[Path, TorrentInfo]:
    """Make ``<store>/cars/<root>.torrent`` from the snapshot in the store (atomic write).

    The torrent depends only on the snapshot and the web seed, so one already made for both is kept:
    it is reused when its SHA-256 is the one recorded when it was written (``cache/torrents``) and it
    still reads as the torrent of ``root`` with that web seed. Otherwise it is assembled
    (:func:`assemble`) from each file's hashes, which libtorrent makes only for files no earlier
    torrent had (:mod:`pipeline.export.torrentfiles`), so its cost is that of what changed."""
    seed = gateway.rstrip("/") + "/ipfs/"
    path = torrent_path(store, root)
    cache = DerivedCache(store, "torrents")
    key = key_of("torrent", str(root), seed, PIECE_LENGTH, CREATOR, importlib.metadata.version("libtorrent"))
    doc = cache.get(key)
    if doc is not None and path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == doc.get("sha256"):
            info = read(data)
            if info.name == str(root) and info.web_seeds == (seed,):
                return path, info
    hashes = FileHashCache(store, PIECE_LENGTH)
    with tempfile.TemporaryDirectory(prefix="torrent-", dir=store.tmp) as tmp:
        files = snapshot_files(store, root, hashes, Path(tmp))
    try:
        data = assemble(str(root), files, seed)
    except TorrentError as e:
        if not hashes.hits:
            raise
        raise TorrentError(f"{e} ({hashes.hits} files' hashes were read from {hashes.cache.dir}, which only this "
                           "store writes: a wrong one is caught here; remove that directory and run again)") from e
    if log is not None:
        log(f"torrent: {len(files)} files, {hashes.misses} hashed now, {hashes.hits} from the cache by content")
    atomic_write(path, data)  # whole or nothing; a full disk is a StoreError naming the file
    cache.put(key, {"sha256": hashlib.sha256(data).hexdigest()})
    return path, read(data)


def release_field_beside(car_path: Path) -> dict[str, Any] | None:
    """The manifest's ``torrent`` field for the snapshot whose CAR is ``car_path`` (None: no torrent made;
    ``doit publish`` refuses that case before signing)."""
    path = car_path.with_suffix(".torrent")
    return release_field(path) if path.exists() else None


def release_field(path: Path) -> dict[str, Any]:
    """What a release manifest records about the snapshot's torrent."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TorrentError(f"{path}: no torrent for this snapshot (run `doit snapshot`): {e}") from e
    info = read(data)
    return {"filename": path.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "info_hash_v1": info.info_hash_v1, "info_hash_v2": info.info_hash_v2,
            "piece_length": info.piece_length, "web_seeds": list(info.web_seeds),
            "pieces_roots": info.pieces_roots}
