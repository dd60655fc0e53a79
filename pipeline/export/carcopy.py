"""Writing a snapshot's CARv1 (https://ipld.io/specs/transport/car/carv1/) from the previous one.

A CARv1 is a header naming the root, then one section ``varint(len(cid)+len(block)) ‖ cid ‖ block``
per block, depth-first, each block once. Consecutive snapshots share almost every block, and a
depth-first walk puts an unchanged subtree's blocks in the same order, so most of a new CAR is runs
of sections of the previous CAR. Each CAR written here leaves a *section index* (every section's
CID, offset and length, in file order; ``<store>/cache/car-index/<key>``, a verified store document
keyed by the CAR's root, SHA-256 and size). The next CAR is written from the same depth-first walk
(:func:`pipeline.export.snapshot.iter_blocks` gives the order), but a raw leaf (or a dag-pb node)
already in the previous CAR is not read from the store: consecutive ones are coalesced into runs and
copied with ``copy_file_range(2)`` (a kernel copy). Only new blocks are read from the store, verified,
and written. The result is byte for byte what a full write gives (tests/test_snapshot_incremental.py).

Trusting the previous CAR: its blocks were verified when they were written, and the file is used only
if it is the one recorded (size, and the (device, inode, size, mtime, ctime) stamp of the last write or
hash in ``cache/car-checks``; otherwise it is hashed again and must have its recorded SHA-256). A
copied run is then checked where it lands: every section's ``varint ‖ CID`` prefix must be at the
offset the index says (a wrong or stale index cannot splice the wrong bytes in). Anything else (no
index, a missing, truncated, edited or unrecorded CAR, a prefix that does not match) means a full
write, every block read verified from the store, and says so in the log.

The new CAR's SHA-256 (``SnapshotRecord.car.sha256``) stays the SHA-256 of its bytes, all of them:
a thread follows the writer through the new file, reading back (from the page cache) what has been
written, hashing it in order and checking each copied section's prefix where it landed. Another thread
fdatasyncs what has been written every 64 MiB, so dirty pages do not pile up until the kernel throttles
the writer, and the final fsync (before the rename: the store's atomic-write contract, unchanged) has
little left to do. On ext4 (no reflinks) a new CAR is still a new file of the set's size: its time is
bounded by the disk's write speed, whatever is copied (docs/snapshots.md has the figures).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.ipfs import car, dagpb
from pipeline.export.ipfs.multiformats import CID, DAG_PB, varint
from pipeline.model.errors import StoreError
from pipeline.store.local import Store, sha256_file

__all__ = ["CarIndex", "CarWritten", "PreviousCar", "Section", "car_stamp", "load_index", "previous_car",
           "save_index", "stamp_written", "trusted_car", "write_car", "write_car_file"]

_FLUSH_EVERY = 64 << 20  # copy and write this much, then let the read-back and the flusher catch up
_READ_CHUNK = 4 << 20


@dataclass(frozen=True)
class Section:
    """One CAR section: the block's CID (bytes), where the section starts and its length in bytes."""

    cid: bytes
    offset: int
    length: int

    @property
    def prefix(self) -> bytes:
        """The section's ``varint(len(cid)+len(block)) ‖ cid``, what must be at ``offset``."""
        for width in range(1, 10):  # the varint counts the bytes after itself
            body = self.length - width
            if len(varint(body)) == width:
                return varint(body) + self.cid
        raise ValueError(f"section at {self.offset}: no varint length fits {self.length} bytes")


@dataclass(frozen=True)
class CarIndex:
    """Every section of one CAR, in file order, and the CAR it describes."""

    root: str
    sha256: str
    size: int
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class CarWritten:
    size: int
    sha256: str
    digests: frozenset[str]  # every block's SHA-256 (hex), for the snapshot record
    copied_blocks: int
    copied_bytes: int
    new_blocks: int
    index: CarIndex
    write_seconds: float = 0.0  # the walk: runs copied, new blocks read verified and written
    hash_seconds: float = 0.0   # then waiting for the read-back (prefixes checked, SHA-256) to finish
    fsync_seconds: float = 0.0  # then the final fsync


def car_stamp(path: Path) -> list[int]:
    """The file's identity and last change: any write to it changes mtime and ctime."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _checks(store: Store) -> DerivedCache:
    return DerivedCache(store, "car-checks")


def _index_key(root: str, sha256: str, size: int) -> str:
    return key_of("car-index", root, sha256, size)


def save_index(store: Store, index: CarIndex) -> None:
    DerivedCache(store, "car-index").put(_index_key(index.root, index.sha256, index.size), {
        "root": index.root, "sha256": index.sha256, "size": index.size,
        "sections": [[s.cid.hex(), s.offset, s.length] for s in index.sections]})


def load_index(store: Store, root: str, sha256: str, size: int) -> CarIndex | None:
    """The section index recorded for this exact CAR; None if absent or not well-formed."""
    doc = DerivedCache(store, "car-index").get(_index_key(root, sha256, size))
    if doc is None or (doc.get("root"), doc.get("sha256"), doc.get("size")) != (root, sha256, size):
        return None
    try:
        sections = tuple(Section(bytes.fromhex(c), int(o), int(n)) for c, o, n in doc["sections"])
    except (KeyError, TypeError, ValueError):
        return None
    end = sections[0].offset if sections else size
    for s in sections:  # contiguous, in order, to the end of the file
        if s.offset != end or s.length <= 0:
            return None
        end += s.length
    if end != size:
        return None
    return CarIndex(root, sha256, size, sections)


def trusted_car(store: Store, root: str, sha256: str, size: int, path: Path) -> str | None:
    """None if ``path`` is the recorded CAR (its stamp is the one recorded when it was written or last
    hashed, or failing that its bytes hash to ``sha256``); otherwise why not.

    A file changed within 2 s of being hashed is not stamped (a write in the same clock tick as the
    hash would not show in the times: git's "racy" rule), so it is hashed again next time."""
    try:
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} is {path.stat().st_size:,} bytes, its record says {size:,}"
        key = key_of("car", root, sha256, size)
        doc = _checks(store).get(key)
        if doc is not None and doc.get("stamp") == car_stamp(path):
            return None
        actual, _ = sha256_file(path)
        if actual != sha256:
            return f"{path} hashes to {actual}, its record says {sha256}"
        stamp = car_stamp(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if time.time_ns() - max(stamp[3], stamp[4]) > 2_000_000_000:
        _checks(store).put(key, {"stamp": stamp})
    return None


def stamp_written(store: Store, root: str, sha256: str, size: int, path: Path) -> None:
    _checks(store).put(key_of("car", root, sha256, size), {"stamp": car_stamp(path)})


@dataclass(frozen=True)
class PreviousCar:
    path: Path
    index: CarIndex
    by_cid: dict[bytes, Section]
    stamp: list[int]  # the file as it was checked; the copy is refused if the file it opens is not it


def previous_car(store: Store, root: str, sha256: str, size: int, path: Path,
                 log: Callable[[str], None]) -> PreviousCar | None:
    """The previous CAR to copy runs from, if its index is recorded and the file is the recorded one."""
    index = load_index(store, root, sha256, size)
    if index is None:
        log(f"snapshot: no section index for {path.name}: writing every block from the store")
        return None
    why = trusted_car(store, root, sha256, size, path)
    if why is not None:
        log(f"snapshot: not copying from the previous CAR ({why}): writing every block from the store")
        return None
    try:
        stamp = car_stamp(path)
    except OSError as e:
        log(f"snapshot: not copying from the previous CAR ({path}: {e.strerror or e}): writing every block "
            "from the store")
        return None
    return PreviousCar(path, index, {s.cid: s for s in index.sections}, stamp)


class _RunMismatch(Exception):
    pass


def _walk(store: Store, root: CID, previous: PreviousCar | None) -> Iterator[tuple[CID, bytes | Section]]:
    """The depth-first walk of :func:`pipeline.export.snapshot.iter_blocks` (each block once, by digest),
    yielding a block already in ``previous`` as its section there, without reading it when it is raw."""
    seen: set[bytes] = set()
    stack = [root]
    old = previous.by_cid if previous is not None else {}
    while stack:
        cid = stack.pop()
        if cid.digest in seen:
            continue
        seen.add(cid.digest)
        section = old.get(bytes(cid))
        if cid.codec == DAG_PB:
            block = store.read_bytes(cid.hex_digest)  # links are needed; dag-pb nodes are small
            yield cid, section if section is not None else block
            stack.extend(reversed([link.cid for link in dagpb.decode(block).links]))
        elif section is not None:
            yield cid, section
        else:
            yield cid, store.read_bytes(cid.hex_digest)


class _ReadBack:
    """Follows the writer through the new file: reads back what is written (page cache), hashes it in
    order and checks each copied section's ``varint ‖ CID`` prefix where it landed. Runs in a thread
    beside the writer (hashlib and pread release the GIL), as does a flusher that fdatasyncs what is
    written so far, so dirty pages do not pile up and throttle the copy, and the final fsync is short."""

    def __init__(self, fd: int):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.cond = threading.Condition()
        self.written = 0
        self.done = False
        self.checks: list[tuple[int, bytes, CID]] = []  # (offset in the new file, prefix, for messages)
        self.error: BaseException | None = None
        self.flushes = 0  # flushes asked for (the flusher syncs once per wake-up, however many)

    def advance(self, written: int, checks: Sequence[tuple[int, bytes, CID]] = ()) -> None:
        with self.cond:
            self.checks.extend(checks)
            self.written = written
            self.flushes += 1
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def hash_loop(self) -> None:
        pos, k = 0, 0
        try:
            while True:
                with self.cond:
                    while pos >= self.written and not self.done:
                        self.cond.wait()
                    limit, done, checks = self.written, self.done, self.checks[k:]
                while pos < limit:
                    chunk = os.pread(self.fd, min(_READ_CHUNK, limit - pos), pos)
                    if not chunk:
                        raise _RunMismatch(f"the new CAR is short at {pos:,}")
                    self.sha.update(chunk)
                    pos += len(chunk)
                for offset, prefix, cid in checks:
                    if offset + len(prefix) > limit:
                        break
                    if os.pread(self.fd, len(prefix), offset) != prefix:
                        raise _RunMismatch(f"no section of {cid} where the previous CAR's index puts it")
                    k += 1
                if done and pos >= limit:
                    return
        except BaseException as e:  # handed to the writer, which raises it
            self.error = e

    def flush_loop(self) -> None:
        seen = 0
        try:
            while True:
                with self.cond:
                    while self.flushes == seen and not self.done:
                        self.cond.wait()
                    if self.done:
                        return
                    seen = self.flushes
                os.fdatasync(self.fd)
        except OSError as e:
            self.error = e


def write_car(store: Store, root: CID, tmp_fd: int, previous: PreviousCar | None) -> CarWritten:
    """Write the CAR of ``root`` to ``tmp_fd`` (an empty file open for reading and writing), copying
    runs of ``previous`` where it can. Raises :class:`_RunMismatch` if a copied run is not where the
    previous CAR's index says (the caller then writes again without ``previous``)."""
    pos = 0
    sections: list[Section] = []
    digests: set[str] = set()
    copied_blocks = copied_bytes = new_blocks = 0
    run: list[Section] = []  # consecutive sections of the previous CAR, to copy in one go
    run_bytes = 0
    back = _ReadBack(tmp_fd)
    threads = [threading.Thread(target=back.hash_loop, daemon=True),
               threading.Thread(target=back.flush_loop, daemon=True)]
    src = os.open(previous.path, os.O_RDONLY) if previous is not None else -1
    if previous is not None:
        st = os.fstat(src)
        if [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] != previous.stamp:
            os.close(src)
            raise _RunMismatch(f"{previous.path} changed after it was checked")
    unflushed = 0

    def put(data: bytes) -> None:
        nonlocal pos, unflushed
        view = memoryview(data)
        while view:
            n = os.write(tmp_fd, view)
            view = view[n:]
        pos += len(data)
        unflushed += len(data)
        if unflushed >= _FLUSH_EVERY:
            back.advance(pos)
            unflushed = 0

    def flush_run() -> None:
        nonlocal pos, copied_bytes, run_bytes, unflushed
        if not run:
            return
        assert previous is not None
        if back.error is not None:  # the read-back already failed: stop copying
            raise back.error
        start, length = run[0].offset, run[-1].offset + run[-1].length - run[0].offset
        checks = [(pos + s.offset - start, s.prefix, CID.from_bytes(s.cid)) for s in run]
        dst_start, done = pos, 0
        while done < length:
            n = os.copy_file_range(src, tmp_fd, min(length - done, _FLUSH_EVERY), start + done, dst_start + done)
            if n == 0:
                raise _RunMismatch(f"{previous.path} ends inside a run, at {start + done:,}")
            done += n
            back.advance(dst_start + done, [c for c in checks if c[0] < dst_start + done] if checks else [])
            checks = [c for c in checks if c[0] >= dst_start + done]
        os.lseek(tmp_fd, dst_start + length, os.SEEK_SET)
        pos = dst_start + length
        copied_bytes += length
        unflushed = 0
        run.clear()
        run_bytes = 0

    started = time.perf_counter()
    for t in threads:
        t.start()
    try:
        put(car.header([root]))
        for cid, item in _walk(store, root, previous):
            digests.add(cid.hex_digest)
            if isinstance(item, Section):
                if run and run[-1].offset + run[-1].length != item.offset:
                    flush_run()
                run.append(item)
                sections.append(Section(item.cid, pos + run_bytes, item.length))
                run_bytes += item.length
                copied_blocks += 1
            else:
                flush_run()
                data = car.section(cid, item)
                sections.append(Section(bytes(cid), pos, len(data)))
                put(data)
                new_blocks += 1
        flush_run()
        back.advance(pos)
    finally:
        if src >= 0:
            os.close(src)
        back.finish()
        wrote = time.perf_counter()
        for t in threads:
            t.join()
    if back.error is not None:
        if isinstance(back.error, OSError | _RunMismatch):
            raise back.error
        raise RuntimeError(f"reading the new CAR back: {back.error}") from back.error
    hashed = time.perf_counter()
    index = CarIndex(str(root), back.sha.hexdigest(), pos, tuple(sections))
    return CarWritten(pos, index.sha256, frozenset(digests), copied_blocks, copied_bytes, new_blocks, index,
                      wrote - started, hashed - wrote)


def write_car_file(store: Store, root: CID, car_path: Path, previous: PreviousCar | None,
                   log: Callable[[str], None]) -> CarWritten:
    """Write ``car_path`` atomically (temp file in the store's tmp, fsync, rename), from ``previous``
    where it can; a copied run that does not check is logged and the CAR is written again in full."""
    for source in ([previous, None] if previous is not None else [None]):
        fd, tmp = tempfile.mkstemp(dir=store.tmp, prefix="car-")
        try:
            try:
                written = write_car(store, root, fd, source)
            except _RunMismatch as e:
                log(f"snapshot: the previous CAR does not check ({e}): writing every block from the store")
                continue
            t0 = time.perf_counter()
            os.fsync(fd)
            written = dataclasses.replace(written, fsync_seconds=time.perf_counter() - t0)
            os.close(fd)
            fd = -1
            os.replace(tmp, car_path)
            return written
        except OSError as e:
            raise StoreError(f"{car_path}: write failed: {e.strerror or e}; nothing was written") from e
        finally:
            if fd >= 0:
                os.close(fd)
            Path(tmp).unlink(missing_ok=True)
    raise AssertionError("unreachable: a write without a previous CAR copies nothing, so it cannot mismatch")
