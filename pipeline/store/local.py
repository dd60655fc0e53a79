"""The content-addressed store.

Layout under the root (``$WHEELPROOF_STORE``, else ``./store``)::

    objects/sha256/ab/abcdef…   immutable bytes, named by their SHA-256
    refs/<kind>/<name>          a root: one line holding an object digest
    tmp/                        writes in progress (same filesystem, so rename is atomic)
    lock                        flock: shared for writers, exclusive for gc

Every write goes to ``tmp/``, is fsynced, then renamed into place, so a reader
never sees a partial object, and an interrupted write leaves only a stray temp
file that ``gc`` removes. Every read re-hashes what it returns.

Objects may be zstandard-compressed (records, logs); they are still addressed
by the SHA-256 of the stored (compressed) bytes, so verification is uniform.
IPFS blocks live here too: a CID's sha2-256 multihash *is* the object name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from pipeline.model.errors import IntegrityError, StoreError
from pipeline.model.records import (
    BUILD_KIND,
    SNAPSHOT_KIND,
    TEST_KIND,
    BuildRecord,
    SnapshotRecord,
    TestRecord,
    check_ref,
    decode,
)

STORE_ENV = "WHEELPROOF_STORE"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RECORD_TYPES: dict[str, type[BuildRecord] | type[TestRecord] | type[SnapshotRecord]] = {
    BUILD_KIND: BuildRecord, TEST_KIND: TestRecord, SNAPSHOT_KIND: SnapshotRecord}
_REF_NAME = re.compile(r"^[A-Za-z0-9._@+-][A-Za-z0-9._@+=-]*$")


def default_root() -> Path:
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parents[2] / "store").resolve()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: temp file beside it, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class PendingObject:
    """A file being written into the store; hashed as it is written."""

    def __init__(self, store: Store, fileobj: IO[bytes], tmp_path: Path):
        self._store = store
        self._file = fileobj
        self.tmp_path = tmp_path
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> str:
        """Verify against the pins (if given), fsync, and rename into place."""
        if expected_size is not None and self.size != expected_size:
            raise IntegrityError(f"size {self.size} != expected {expected_size}")
        digest = self.digest
        if expected_sha256 is not None and digest != expected_sha256:
            raise IntegrityError(f"sha256 {digest} != expected {expected_sha256}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.object_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp_path, 0o444)
        os.replace(self.tmp_path, final)
        _fsync_dir(final.parent)
        return digest


@dataclass(frozen=True)
class FsckProblem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Store:
    """Objects addressed by SHA-256 plus named roots (refs)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()
        self.objects = self.root / "objects" / "sha256"
        self.refs = self.root / "refs"
        self.tmp = self.root / "tmp"
        for d in (self.objects, self.refs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / "lock"
        self._lock_path.touch(exist_ok=True)

    # -- locking ---------------------------------------------------------
    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        with open(self._lock_path, "rb") as f:
            fcntl.flock(f.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def shared(self) -> contextlib.AbstractContextManager[None]:
        """Held by anything that writes objects and then refs (blocks gc, not other writers)."""
        return self._flock(fcntl.LOCK_SH)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._flock(fcntl.LOCK_EX)

    # -- objects ---------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        if not HEX64.match(digest):
            raise StoreError(f"not a SHA-256 digest: {digest!r}")
        return self.objects / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.object_path(digest).is_file()

    @contextlib.contextmanager
    def writer(self) -> Iterator[PendingObject]:
        """Yield a :class:`PendingObject`; it must be committed, else it is discarded."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="obj-")
        tmp_path = Path(name)
        f = os.fdopen(fd, "wb")
        pending = PendingObject(self, f, tmp_path)
        try:
            yield pending
        finally:
            if not f.closed:
                f.close()
            tmp_path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return digest
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def put_file(self, path: Path, expected_sha256: str | None = None) -> str:
        with self.writer() as w, open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
            return w.commit(expected_sha256=expected_sha256)

    def read_bytes(self, digest: str) -> bytes:
        """The object's bytes, re-hashed: a corrupted object raises :class:`IntegrityError`."""
        path = self.object_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"object {digest} is not in the store {self.root}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"object {digest} is corrupt (its bytes hash to {actual}): {path}")
        return data

    def verified_path(self, digest: str) -> Path:
        """Path of an object after checking its hash (for large objects handed to other programs)."""
        path = self.object_path(digest)
        if not path.is_file():
            raise StoreError(f"object {digest} is not in the store {self.root}")
        actual, _ = sha256_file(path)
        if actual != digest:
            raise IntegrityError(f"object {digest} is corrupt (its bytes hash to {actual}): {path}")
        return path

    def iter_objects(self) -> Iterator[str]:
        for sub in sorted(self.objects.iterdir()):
            if sub.is_dir():
                for p in sorted(sub.iterdir()):
                    yield p.name

    # -- compressed JSON documents (records, manifests) -----------------
    def put_json(self, doc: Any) -> str:
        raw = json.dumps(doc, sort_keys=True, indent=1).encode()
        return self.put_bytes(zstandard.ZstdCompressor(level=10).compress(raw))

    def read_json(self, digest: str) -> Any:
        return json.loads(zstandard.ZstdDecompressor().decompress(self.read_bytes(digest)))

    def put_compressed(self, data: bytes) -> str:
        return self.put_bytes(zstandard.ZstdCompressor(level=10).compress(data))

    def read_compressed(self, digest: str) -> bytes:
        return zstandard.ZstdDecompressor().decompress(self.read_bytes(digest))

    # -- refs ------------------------------------------------------------
    def _ref_path(self, kind: str, name: str) -> Path:
        for part in (kind, name):
            if not _REF_NAME.match(part) or part in (".", ".."):
                raise StoreError(f"bad ref name {kind}/{name}")
        return self.refs / kind / name

    def set_ref(self, kind: str, name: str, digest: str) -> None:
        """Point a root at an object, atomically; the object must already be stored."""
        if not self.has(digest):
            raise StoreError(f"ref {kind}/{name} would point at a missing object {digest}")
        path = self._ref_path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="ref-")
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def get_ref(self, kind: str, name: str) -> str | None:
        try:
            digest = self._ref_path(kind, name).read_text().strip()
        except FileNotFoundError:
            return None
        if not HEX64.match(digest):
            raise StoreError(f"ref {kind}/{name} is malformed")
        return digest

    def list_refs(self, kind: str | None = None) -> Iterator[tuple[str, str, str]]:
        kinds = [kind] if kind else sorted(p.name for p in self.refs.iterdir() if p.is_dir())
        for k in kinds:
            d = self.refs / k
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    yield k, p.name, p.read_text().strip()

    # -- maintenance ----------------------------------------------------
    def fsck(self) -> list[FsckProblem]:
        """Re-hash every object and check every ref points at a stored object."""
        problems: list[FsckProblem] = []
        for sub in sorted(self.objects.iterdir()):
            for p in sorted(sub.iterdir()) if sub.is_dir() else []:
                if not HEX64.match(p.name) or p.name[:2] != sub.name:
                    problems.append(FsckProblem(p, "stray file in the object directory"))
                    continue
                actual, _ = sha256_file(p)
                if actual != p.name:
                    problems.append(FsckProblem(p, f"corrupt: bytes hash to {actual}"))
        for kind, name, digest in self.list_refs():
            if not HEX64.match(digest):
                problems.append(FsckProblem(self.refs / kind / name, "malformed ref"))
            elif not self.has(digest):
                problems.append(FsckProblem(self.refs / kind / name, f"points at missing object {digest}"))
            elif kind in _RECORD_TYPES:
                problem = self._record_problem(kind, name, digest)
                if problem:
                    problems.append(FsckProblem(self.refs / kind / name, problem))
        return problems

    def _record_problem(self, kind: str, name: str, digest: str) -> str | None:
        """Why the record behind ``refs/<kind>/<name>`` is malformed or another id's, if it is."""
        where = f"refs/{kind}/{name}"
        try:
            check_ref(decode(_RECORD_TYPES[kind], self.read_json(digest), where), name, where)
        except (IntegrityError, ValueError, zstandard.ZstdError) as e:
            return f"bad record: {e}"
        return None

    def reachable(self, extra_roots: Iterable[str] = ()) -> set[str]:
        """Digests reachable from refs and ``extra_roots``; JSON documents list theirs in ``references``."""
        live: set[str] = set()
        stack = [d for _, _, d in self.list_refs()] + list(extra_roots)
        while stack:
            digest = stack.pop()
            if digest in live or not HEX64.match(digest):
                continue
            live.add(digest)
            if not self._looks_compressed(digest):
                continue
            try:
                doc = self.read_json(digest)
            except (zstandard.ZstdError, ValueError, IntegrityError):
                continue  # plain data, not a document
            if isinstance(doc, dict):
                stack.extend(d for d in doc.get("references", []) if isinstance(d, str))
        return live

    def _looks_compressed(self, digest: str) -> bool:
        try:
            with open(self.object_path(digest), "rb") as f:
                return f.read(4) == _ZSTD_MAGIC
        except FileNotFoundError:
            return False

    def gc(self, extra_roots: Iterable[str] = (), stale_tmp_seconds: float = 3600) -> list[str]:
        """Delete objects no root reaches, and temp files left by killed writers."""
        removed: list[str] = []
        with self.exclusive():
            live = self.reachable(extra_roots)
            for digest in list(self.iter_objects()):
                if digest not in live:
                    self.object_path(digest).unlink()
                    removed.append(digest)
            cutoff = time.time() - stale_tmp_seconds
            for p in self.tmp.iterdir():
                if p.stat().st_mtime < cutoff:
                    p.unlink(missing_ok=True)
        return removed
