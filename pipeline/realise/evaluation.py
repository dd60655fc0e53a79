"""Evaluating declarations into a graph, cached so a no-op costs a stat per file.

Parsing and validating 10,000 TOML files takes seconds; a maintainer's ``doit build:NAME`` should not
pay that each time. The cache (``<store>/cache/eval-<key>/``) is keyed by everything the evaluation
depends on besides the files: the source of ``pipeline/`` (so a change to validation invalidates it),
the builder programs, the declared build target (``environments.toml``), the sandbox mode and the
declarations directory. Within it,
each file is known by its stat identity (inode, size, mtime, ctime) and the SHA-256 of its bytes:

- a file whose stat identity is unchanged is trusted, unless it was "racy" when cached (modified within
  :data:`RACY_SECONDS` of being read, when a later edit could keep the same timestamps, as git's index
  handles it); a racy or restatted file is re-read and re-hashed;
- a file whose bytes changed is parsed again; so is every file when any is new or removed, through
  :func:`~pipeline.model.declaration.load_all` with the unchanged ones reused, so whole-set problems
  (duplicates, strays) are still found.

The graph and the file identities live in a small ``graph.pickle``; the parsed declarations in
``declarations.pickle``, read only when an action needs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model.derivation import builder_digest, canonical_json
from pipeline.model.locations import DECLARATIONS_DIR, NON_DECLARATIONS
from pipeline.model.requirements import parse_requirement, remember
from pipeline.model.target import target_file
from pipeline.realise.graph import Graph
from pipeline.realise.sandbox import unsandboxed_requested
from pipeline.store.local import Store, atomic_write, default_root

if TYPE_CHECKING:
    from pipeline.model.declaration import Declaration, Problem

__all__ = ["RACY_SECONDS", "Evaluation", "code_digest"]

RACY_SECONDS = 2.0
PIPELINE_DIR = Path(__file__).resolve().parents[1]

StatKey = tuple[int, int, int, int]


@cache
def code_digest(root: Path = PIPELINE_DIR) -> str:
    """SHA-256 over the library's source: any change to parsing or ids invalidates cached evaluations."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _stat_key(st: os.stat_result) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _racy(st: os.stat_result, now_ns: int) -> bool:
    """Modified so recently that a further edit could leave the same stat identity."""
    return max(st.st_mtime_ns, st.st_ctime_ns) >= now_ns - int(RACY_SECONDS * 1e9)


@dataclass
class _FileEntry:
    key: StatKey
    sha256: str
    racy: bool


@dataclass
class _Index:
    files: dict[str, _FileEntry]  # path relative to the declarations directory
    graph: Graph


class Evaluation:
    """The declarations under ``root`` and their graph, evaluated at most once per change."""

    def __init__(self, root: Path = DECLARATIONS_DIR, store: Store | Path | None = None):
        self.root = root.resolve()
        # A path is enough: the cache directory is made only when there is something to write, so an
        # evaluation that fails (a bad declaration) leaves no trace, not even an empty store.
        store_root = store.root if isinstance(store, Store) else store if store is not None else default_root()
        # The ids in the cached graph depend on exactly this: the declared build target (never this
        # interpreter), the sandbox specification (through code_digest) and the builder programs.
        target = target_file(self.root)
        key = hashlib.sha256(canonical_json({
            "code": code_digest(), "builders": builder_digest(),
            "target": [str(target), _file_digest(target)],
            "unsandboxed": unsandboxed_requested(), "root": str(self.root)})).hexdigest()
        self.cache_dir = store_root / "cache" / f"eval-{key[:32]}"
        self._graph: Graph | None = None
        self._decls: dict[str, Declaration] | None = None

    # -- the fast path ----------------------------------------------------
    def graph(self) -> Graph:
        if self._graph is None:
            index = self._read_index()
            if index is not None and self._unchanged(index):
                self._graph = index.graph
            else:
                self._evaluate()
        assert self._graph is not None
        return self._graph

    def declarations(self) -> dict[str, Declaration]:
        """Every declaration, parsed and validated (from the cache where the files are unchanged)."""
        if self._decls is None:
            index = self._read_index()
            cached = self._read_declarations() if index is not None and self._unchanged(index) else {}
            if index is not None and all(e.sha256 in cached for e in index.files.values()):
                decls = (cached[e.sha256] for e in index.files.values())
                self._decls = dict(sorted((d.canonical_name, d) for d in decls))
                self._graph = self._graph or index.graph
                reqs = self._read("requirements.pickle")
                remember(reqs if isinstance(reqs, list) else [])
            else:
                self._evaluate()
        assert self._decls is not None
        return self._decls

    def _files(self) -> dict[str, os.stat_result]:
        out = {}
        for shard in os.scandir(self.root):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    if entry.name.endswith(".toml"):
                        out[f"{shard.name}/{entry.name}"] = entry.stat(follow_symlinks=False)
        return out

    def _unchanged(self, index: _Index) -> bool:
        files = self._files()
        if files.keys() != index.files.keys() or any(
                p.name not in NON_DECLARATIONS for p in self.root.glob("*.toml")):
            return False
        now = time.time_ns()
        settled = False
        for rel, st in files.items():
            entry = index.files[rel]
            if entry.racy or entry.key != _stat_key(st):
                if hashlib.sha256((self.root / rel).read_bytes()).hexdigest() != entry.sha256:
                    return False
                index.files[rel] = _FileEntry(_stat_key(st), entry.sha256, _racy(st, now))
                settled = True
        if settled:  # remember the re-hashed files, so the next no-op is a stat per file again
            self._write("graph.pickle", index)
        return True

    # -- the slow path ----------------------------------------------------
    def _evaluate(self) -> None:
        # The machinery to parse and plan is imported only when something changed.
        from pipeline.model.declaration import load_all, read_one
        from pipeline.realise.graph import plan

        cached = self._read_declarations()
        files: dict[str, _FileEntry] = {}
        started = time.time_ns()

        def read(path: Path, problems: list[Problem], root: Path) -> Declaration | None:
            data = path.read_bytes()
            st = os.stat(path, follow_symlinks=False)
            digest = hashlib.sha256(data).hexdigest()
            files[path.relative_to(self.root).as_posix()] = _FileEntry(_stat_key(st), digest, _racy(st, started))
            decl = cached.get(digest)
            if decl is not None and decl.path == path:
                return decl
            return read_one(path, problems, root)

        decls = dict(sorted(load_all(self.root, read).items()))
        self._decls, self._graph = decls, plan(decls)
        # The raw TOML document is left out: nothing reads it after validation, and it doubles the cache.
        by_digest = {files[d.path.relative_to(self.root).as_posix()].sha256: dataclasses.replace(d, raw={})
                     for d in decls.values()}
        self._write("declarations.pickle", by_digest)
        # Each requirement parsed once here, so the rules (check) need not parse them again next time.
        texts = {t for d in decls.values() for t in (*d.dependencies, *(d.test.requires if d.test else ()))}
        self._write("requirements.pickle", [parse_requirement(t) for t in sorted(texts)])
        self._write("graph.pickle", _Index(files, self._graph))

    def _read_index(self) -> _Index | None:
        index = self._read("graph.pickle")
        return index if isinstance(index, _Index) else None

    def _read_declarations(self) -> Mapping[str, Declaration]:
        decls = self._read("declarations.pickle")
        return decls if isinstance(decls, dict) else {}

    # The cache is the store's own derived data, written only by this class (atomically); anything
    # unreadable is treated as absent and rebuilt.
    def _read(self, name: str) -> object:
        try:
            with open(self.cache_dir / name, "rb") as f:
                return pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            return None

    def _write(self, name: str, value: object) -> None:
        try:
            atomic_write(self.cache_dir / name, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # a read-only store still evaluates, only without the cache
