"""The snapshot's other formats, beside the PEP 503/691 index: a conda channel and PEP 751 locks.

:func:`subtrees` is the hook :func:`pipeline.export.snapshot.publish` calls with the rendered tree:
it adds ``conda/noarch/`` (:mod:`pipeline.export.conda`) and ``locks/pylock.<environment>.toml``
(:mod:`pipeline.export.pylock`), one lock per supported environment for the whole set. Inside the
snapshot a wheel cannot be addressed by the root CID (the root depends on the lock), so the locks
address each wheel by its project directory's CID: ``<gateway>/ipfs/<CID of simple/NAME/>/<wheel>``,
a path the gateway serves and any IPFS node that imported the CAR resolves.
:func:`snapshot_wheels` reads a published snapshot back from the store for ``python -m pipeline lock``,
which addresses wheels as ``<gateway>/ipfs/<root CID>/simple/NAME/<wheel>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.export import conda, pylock
from pipeline.export.ipfs.gateway import DagReader, NotFound
from pipeline.export.ipfs.multiformats import CID
from pipeline.export.ipfs.unixfs import Tree, cid_of_tree
from pipeline.export.snapshot import JSON_INDEX, PublishedWheel
from pipeline.model.environments import Environment
from pipeline.store.local import Store

__all__ = ["DEFAULT_GATEWAY", "GATEWAY_ENV", "gateway_url", "snapshot_wheels", "subtrees"]

GATEWAY_ENV = "WHEELPROOF_GATEWAY_URL"
DEFAULT_GATEWAY = "http://127.0.0.1:8080"  # `doit serve`'s address and an IPFS node's default gateway


def gateway_url() -> str:
    return os.environ.get(GATEWAY_ENV, DEFAULT_GATEWAY).rstrip("/")


def subtrees(environments: Iterable[Environment], gateway: str | None = None,
             names: conda.NameMap | None = None, log: Callable[[str], None] = print,
             store: Store | None = None,
             unavailable: Callable[[str, Environment], str | None] | None = None,
             ) -> Callable[[Tree, list[PublishedWheel]], Tree]:
    """The hook: ``conda/`` and ``locks/`` for a rendered snapshot tree.

    ``unavailable(project, env)``: why a project is not offered in ``env`` although a wheel of it
    would install there (its declaration's ``[[unsupported]]``, e.g. a pure project whose dependency
    has no wheel for that environment), or None; such a project is not in that environment's lock.

    With the ``store`` the wheels came from, each conda package is made once per wheel content
    (:func:`pipeline.export.conda.channel`); a tree whose wheels are already imported (entries, not
    files) needs it."""
    envs = list(environments)
    base = gateway or gateway_url()

    def hook(tree: Tree, published: list[PublishedWheel]) -> Tree:
        simple = tree["simple"]
        assert isinstance(simple, dict)
        channel_wheels: list[conda.ChannelWheel] = []
        available: dict[str, list[pylock.LockableWheel]] = {}
        for w in published:
            project_dir = simple[w.project]
            assert isinstance(project_dir, dict)
            path = project_dir[w.wheel.filename]
            meta = project_dir[w.wheel.filename + ".metadata"]
            assert isinstance(meta, bytes)
            if not isinstance(path, Path):
                if store is None:
                    raise ValueError(f"{w.wheel.filename}: an imported wheel and no store to convert it from")
                path = store.object_path(w.wheel.sha256)
            channel_wheels.append(conda.ChannelWheel(w.project, w.version, w.wheel.filename, path, w.wheel.sha256))
            url = f"{base}/ipfs/{cid_of_tree(project_dir)}/{w.wheel.filename}"
            available.setdefault(w.project, []).append(pylock.LockableWheel(
                w.project, w.version, w.wheel.filename, w.wheel.sha256, w.wheel.size, w.requires_python,
                pylock.requires_dist(meta, w.wheel.filename), url))
        locks: Tree = {}
        for env in envs:
            # what the environment has: a project whose Requires-Python excludes it is not offered there
            names_here = [p for p, ws in sorted(available.items()) if any(pylock.serves(w, env) for w in ws)
                          and (unavailable is None or unavailable(p, env) is None)]
            locks[f"pylock.{env.name}.toml"] = pylock.lock(available, names_here, env).encode()
        log(f"locks: {len(locks)} pylock.toml files (one per supported environment)")
        return {"conda": conda.channel(channel_wheels, names, log, store), "locks": locks}

    return hook


def _read(reader: DagReader, root: CID, path: list[str]) -> bytes:
    try:
        node = reader.resolve(root, path)
    except NotFound as e:
        raise pylock.LockError(f"snapshot {root}: no {'/'.join(path)}: {e}") from e
    return b"".join(reader.read(node, 0, reader.size(node)))


def snapshot_wheels(store: Store, root: CID, gateway: str | None = None) -> dict[str, list[pylock.LockableWheel]]:
    """Every published wheel of a snapshot in the store, addressed through the gateway."""
    base = gateway or gateway_url()
    reader = DagReader(store)
    published = json.loads(_read(reader, root, ["wheelproof.json"]))["published"]
    out: dict[str, list[pylock.LockableWheel]] = {}
    pages: dict[str, dict[str, dict]] = {}  # type: ignore[type-arg]
    for entry in published:
        project, filename = entry["project"], entry["filename"]
        if project not in pages:
            doc = json.loads(_read(reader, root, ["simple", project, JSON_INDEX]))
            pages[project] = {f["filename"]: f for f in doc["files"]}
        page = pages[project][filename]
        meta = _read(reader, root, ["simple", project, filename + ".metadata"])
        out.setdefault(project, []).append(pylock.LockableWheel(
            project, entry["version"], filename, entry["sha256"], page["size"], page.get("requires-python"),
            pylock.requires_dist(meta, filename), f"{base}/ipfs/{root}/simple/{project}/{filename}"))
    return out
