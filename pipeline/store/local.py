"""The content-addressed store.

Layout under the root (``$WHEELPROOF_STORE``, else ``./store``)::

    objects/sha256/ab/abcdef…   immutable bytes, named by their SHA-256
    refs/<kind>/<name>          a root: one line holding an object digest
    tmp/                        writes in progress (same filesystem, so rename is atomic)
    lock                        flock: shared for writers, exclusive for gc

Every write goes to ``tmp/``, is fsynced, then renamed into place, so a reader
never sees a partial object, and an interrupted write leaves only a stray temp
file (or a build's directory) that ``gc`` removes. Every read re-hashes what it
returns. A failed write (``ENOSPC``, ``EIO``, ...) raises :class:`StoreError`
naming the store and removes its temporary file.

Locking (``flock(2)`` on ``lock``): every object or ref write holds the shared
lock for its duration, and so do builds, test runs and ``declare`` around their
whole work (their temporary directories live in ``tmp/``); ``gc`` takes the
exclusive lock, so whatever it finds in ``tmp/`` belongs to a process that is
gone. :meth:`Store.shared` is re-entrant (nested holders in one process keep
the lock until the outermost one exits).

Objects may be zstandard-compressed (records, logs); they are still addressed
by the SHA-256 of the stored (compressed) bytes, so verification is uniform.
IPFS blocks live here too: a CID's sha2-256 multihash *is* the object name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

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

__all__ = ["STORE_ENV", "FsckProblem", "GcReport", "PendingObject", "Store", "atomic_write", "default_root",
           "sha256_file"]

STORE_ENV = "WHEELPROOF_STORE"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
R = TypeVar("R", bound=BuildRecord | TestRecord | SnapshotRecord)
_RECORD_TYPES: dict[str, type[BuildRecord] | type[TestRecord] | type[SnapshotRecord]] = {
    BUILD_KIND: BuildRecord, TEST_KIND: TestRecord, SNAPSHOT_KIND: SnapshotRecord}
_REF_NAME = re.compile(r"^[A-Za-z0-9._@+-][A-Za-z0-9._@+=-]*$")
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


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


def _write_failed(where: str, e: OSError) -> StoreError:
    """A write error as one clear message (``ENOSPC`` says the disk is full)."""
    what = "no space left on the device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    err = StoreError(f"{where}: write failed: {what} [errno {e.errno}]; nothing was written")
    err.__cause__ = e
    return err


def atomic_write(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: temp file beside it, fsync, rename (POSIX rename(2) is atomic).

    An ``OSError`` (a full disk, say) becomes :class:`StoreError` naming ``path``; the temp file is removed.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise _write_failed(str(path), e) from e
    except BaseException:
        if tmp is not None:
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


@dataclass(frozen=True)
class GcReport:
    """What ``gc`` did: unreachable objects removed, leftovers removed from ``tmp/``, and entries it
    found where the layout allows none (never deleted nor followed: ``fsck`` reports them too)."""

    removed: list[str]
    tmp_removed: list[Path]
    skipped: list[FsckProblem]


class _SharedLock:
    """One process-wide shared flock per store root, counted so nested holders are re-entrant."""

    _guard = threading.Lock()
    _held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, holders)

    @classmethod
    @contextlib.contextmanager
    def hold(cls, lock_path: Path) -> Iterator[None]:
        with cls._guard:
            fd, holders = cls._held.get(lock_path, (-1, 0))
            if holders == 0:
                fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except BaseException:
                    os.close(fd)
                    raise
            cls._held[lock_path] = (fd, holders + 1)
        try:
            yield
        finally:
            with cls._guard:
                fd, holders = cls._held[lock_path]
                if holders == 1:
                    del cls._held[lock_path]
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                else:
                    cls._held[lock_path] = (fd, holders - 1)


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
        """Held by anything that writes objects and then refs, or works in ``tmp/`` (blocks gc, not other
        writers). Re-entrant: nested ``with store.shared():`` in one process (any threads, any
        :class:`Store` on the same root) keep the lock until the outermost exits."""
        return _SharedLock.hold(self._lock_path)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held by ``gc``; waits for every shared holder (never take it while holding :meth:`shared`)."""
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
        """Yield a :class:`PendingObject`; it must be committed, else it is discarded.

        Holds the shared lock while writing (gc never removes a write in progress). An ``OSError`` while
        writing (``ENOSPC``: the disk is full) becomes :class:`StoreError` naming the store; the temporary
        file is always removed.
        """
        with self.shared():
            try:
                fd, name = tempfile.mkstemp(dir=self.tmp, prefix="obj-")
            except OSError as e:
                raise _write_failed(f"store {self.root}", e) from e
            tmp_path = Path(name)
            f = os.fdopen(fd, "wb")
            try:
                yield PendingObject(self, f, tmp_path)
            except OSError as e:
                if e.errno not in _WRITE_ERRNOS:
                    raise
                raise _write_failed(f"store {self.root}: object {tmp_path.name}", e) from e
            finally:
                try:
                    if not f.closed:
                        f.close()  # flushing buffered bytes can itself fail on a full disk
                except OSError:
                    pass
                finally:
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
        """Digests of the objects stored where they belong (``objects/sha256/ab/ab…``, regular files)."""
        for sub, p in self._object_entries():
            if _is_object(sub, p):
                yield p.name

    def _object_entries(self) -> Iterator[tuple[Path, Path]]:
        for sub in sorted(self.objects.iterdir()):
            if sub.is_dir() and not sub.is_symlink():
                for p in sorted(sub.iterdir()):
                    yield sub, p

    def _unexpected_objects(self) -> Iterator[FsckProblem]:
        """Entries in ``objects/`` the layout does not allow (never deleted nor followed)."""
        for sub in sorted(self.objects.iterdir()):
            if not sub.is_dir() or sub.is_symlink():
                yield FsckProblem(sub, "stray entry in the object directory (not a shard directory)")
        for sub, p in self._object_entries():
            if not _is_object(sub, p):
                yield FsckProblem(p, "stray entry in the object directory (not an object named by its SHA-256)")

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
        tmp: str | None = None
        with self.shared():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="ref-")
                with os.fdopen(fd, "w") as f:
                    f.write(digest + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                _fsync_dir(path.parent)
            except OSError as e:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
                raise _write_failed(f"store {self.root}: ref {kind}/{name}", e) from e

    def get_ref(self, kind: str, name: str) -> str | None:
        try:
            digest = self._ref_path(kind, name).read_text().strip()
        except FileNotFoundError:
            return None
        if not HEX64.match(digest):
            raise StoreError(f"ref {kind}/{name} is malformed")
        return digest

    def list_refs(self, kind: str | None = None) -> Iterator[tuple[str, str, str]]:
        """(kind, name, content) of every ref file; entries that are not regular files are skipped
        (``fsck`` reports them)."""
        kinds = [kind] if kind else sorted(p.name for p in self.refs.iterdir() if p.is_dir() and not p.is_symlink())
        for k in kinds:
            d = self.refs / k
            if d.is_dir() and not d.is_symlink():
                for p in sorted(d.iterdir()):
                    if _is_regular(p):
                        yield k, p.name, p.read_text(errors="replace").strip()

    def _unexpected_refs(self) -> Iterator[FsckProblem]:
        for d in sorted(self.refs.iterdir()):
            if not d.is_dir() or d.is_symlink():
                yield FsckProblem(d, "stray entry in refs/ (not a ref kind directory)")
                continue
            for p in sorted(d.iterdir()):
                if not _is_regular(p):
                    yield FsckProblem(p, "stray entry in refs/ (not a ref file)")

    # -- maintenance ----------------------------------------------------
    def fsck(self) -> list[FsckProblem]:
        """Re-hash every object, check every ref points at a stored object, report stray entries."""
        problems: list[FsckProblem] = list(self._unexpected_objects()) + list(self._unexpected_refs())
        for sub, p in self._object_entries():
            if _is_object(sub, p):
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

    def read_record(self, record_type: type[R], kind: str, name: str, digest: str | None = None) -> R | None:
        """The record behind ``refs/<kind>/<name>`` (or at ``digest``, already read from that ref), checked
        field by field and refused if it was made for another id than the ref names; None without a ref."""
        digest = digest if digest is not None else self.get_ref(kind, name)
        if digest is None:
            return None
        where = f"{self.root}/refs/{kind}/{name}"
        return check_ref(decode(record_type, self.read_json(digest), where), name, where)

    def _record_problem(self, kind: str, name: str, digest: str) -> str | None:
        """Why the record behind ``refs/<kind>/<name>`` is malformed or another id's, if it is."""
        try:
            self.read_record(_RECORD_TYPES[kind], kind, name, digest)
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

    def gc(self, extra_roots: Iterable[str] = (), stale_tmp_seconds: float = 3600) -> GcReport:
        """Delete objects no root reaches, and what killed writers and builds left in ``tmp/``.

        Runs under the exclusive lock, so no build, test run, ``declare`` or object write is in progress
        (they hold the shared lock). Each entry of ``tmp/`` (file, directory tree, symlink, anything) is
        removed once nothing in it changed for ``stale_tmp_seconds`` (a margin for writers that do not
        lock); symlinks are removed, never followed. Entries the layout does not allow elsewhere are
        reported in :attr:`GcReport.skipped`, never deleted.
        """
        removed: list[str] = []
        tmp_removed: list[Path] = []
        with self.exclusive():
            skipped = list(self._unexpected_objects()) + list(self._unexpected_refs())
            live = self.reachable(extra_roots)
            for digest in list(self.iter_objects()):
                if digest not in live:
                    self.object_path(digest).unlink(missing_ok=True)
                    removed.append(digest)
            cutoff = time.time() - stale_tmp_seconds
            for p in sorted(self.tmp.iterdir()):
                if _newest_mtime(p) < cutoff:
                    _remove_tree(p)
                    tmp_removed.append(p)
        return GcReport(removed, tmp_removed, skipped)


def _is_regular(p: Path) -> bool:
    return stat.S_ISREG(p.lstat().st_mode)


def _is_object(shard: Path, p: Path) -> bool:
    return bool(HEX64.match(p.name)) and p.name[:2] == shard.name and _is_regular(p)


def _newest_mtime(p: Path) -> float:
    """The newest mtime in a tree (symlinks not followed): a directory is stale only if nothing in it moved."""
    newest = p.lstat().st_mtime
    if stat.S_ISDIR(p.lstat().st_mode):
        for dirpath, dirnames, filenames in os.walk(p, onerror=lambda e: None):
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _remove_tree(p: Path) -> None:
    """Remove a file, symlink or directory tree, including read-only directories a build left."""
    if not stat.S_ISDIR(p.lstat().st_mode):
        p.unlink(missing_ok=True)
        return

    # a build may leave directories without write or search permission: open them up first (top-down,
    # so each is searchable before os.walk lists it); symlinks are never followed
    os.chmod(p, 0o700)
    for dirpath, dirnames, _ in os.walk(p):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):
                os.chmod(child, 0o700)
    shutil.rmtree(p)
