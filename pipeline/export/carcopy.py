"""A snapshot's CARv1 (https://ipld.io/specs/transport/car/carv1/): its plan, and its bytes made from the
previous made CAR.

A CARv1 is a header naming the root, then one section ``varint(len(cid)+len(block)) ‖ cid ‖ block``
per block, depth-first, each block once (the gateway's ``?format=car``: ``order=dfs; dups=n``). A
snapshot records only the CAR's *plan* (:class:`CarPlan`: every section's CID and length in file
order, so every offset and the total size follow), a store document named by the snapshot record
(``SnapshotRecord.car.index``): :func:`plan_of` reads the DAG's dag-pb nodes (small) and takes each raw
leaf's length from its store object, so a plan costs the DAG's directory and file nodes, never the
set's bytes. The bytes are made on demand (:mod:`pipeline.export.carmake`: ``python -m pipeline car``,
``doit car``, ``doit publish``).

Making copies from a previous made CAR: consecutive snapshots share almost every block, and a
depth-first walk puts an unchanged subtree's blocks in the same order, so most of a new CAR is runs of
sections of the previous one. A raw leaf (or a dag-pb node) already in the previous CAR is not read
from the store: consecutive ones are coalesced into runs and copied with ``copy_file_range(2)``. Only
new blocks are read from the store, verified, and written. The result must be the plan, section for
section, and is byte for byte what a full write gives (tests/test_snapshot_incremental.py).

Trusting the previous CAR: its blocks were verified when it was made, and the file is used only if it
is the one recorded (``cache/car-checks``: its SHA-256, computed while it was written, and the
(device, inode, size, mtime, ctime) stamp of that write or of the last hash; a file whose stamp differs
is hashed again and must have the recorded SHA-256). A copied run is then checked where it lands: every
section's ``varint ‖ CID`` prefix must be at the offset the plan says (a wrong plan cannot splice the
wrong bytes in). Anything else (no record, a missing, truncated, edited CAR, a prefix that does not
match) means a full write, every block read verified from the store, and says so in the log.

The new CAR's SHA-256 is the SHA-256 of its bytes, all of them: a thread follows the writer through the
new file, reading back (from the page cache) what has been written, hashing it in order and checking
each copied section's prefix where it landed. Another thread fdatasyncs what has been written every 64
MiB, so dirty pages do not pile up until the kernel throttles the writer, and the final fsync (before
the rename: the store's atomic-write contract) has little left to do. On ext4 (no reflinks) a made CAR
is a new file of the set's size, bounded by the disk's write speed (docs/snapshots.md has the figures):
that is why a snapshot records the plan and does not make the CAR.
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

import zstandard

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.ipfs import car
from pipeline.export.ipfs.dag import depth_first
from pipeline.export.ipfs.multiformats import CID, DAG_PB, varint
from pipeline.model.errors import IntegrityError, StoreError
from pipeline.store.local import HEX64, Store, sha256_file

__all__ = ["CarPlan", "CarWritten", "PreviousCar", "Section", "car_stamp", "load_plan", "made_sha256", "plan_of",
           "previous_car", "record_made", "save_plan", "write_car", "write_car_file"]

_FLUSH_EVERY = 64 << 20  # copy and write this much, then let the read-back and the flusher catch up
_READ_CHUNK = 4 << 20
_PLAN_KIND = "car-plan"


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
class CarPlan:
    """Every section of one CAR, in file order: what the CAR of ``root`` is, before or without its bytes."""

    root: str
    size: int
    sections: tuple[Section, ...]

    def first_difference(self, other: CarPlan) -> str | None:
        """Where ``other`` departs from this plan (for messages); None if it is the same plan."""
        if (self.root, self.size) != (other.root, other.size):
            return f"root {other.root} and {other.size:,} bytes where the plan has {self.root} and {self.size:,}"
        for mine, theirs in zip(self.sections, other.sections, strict=False):
            if mine != theirs:
                return (f"section at {theirs.offset:,} is {CID.from_bytes(theirs.cid)} ({theirs.length:,} bytes), "
                        f"the plan has {CID.from_bytes(mine.cid)} ({mine.length:,} bytes) at {mine.offset:,}")
        if len(self.sections) != len(other.sections):
            return f"{len(other.sections)} sections where the plan has {len(self.sections)}"
        return None


@dataclass(frozen=True)
class CarWritten:
    size: int
    sha256: str
    digests: frozenset[str]  # every block's SHA-256 (hex), for the snapshot record
    copied_blocks: int
    copied_bytes: int
    new_blocks: int
    plan: CarPlan               # what was written, section by section
    write_seconds: float = 0.0  # the walk: runs copied, new blocks read verified and written
    hash_seconds: float = 0.0   # then waiting for the read-back (prefixes checked, SHA-256) to finish
    fsync_seconds: float = 0.0  # then the final fsync


def car_stamp(path: Path) -> list[int]:
    """The file's identity and last change: any write to it changes mtime and ctime."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _checks(store: Store) -> DerivedCache:
    return DerivedCache(store, "car-checks")


def _section(cid: CID, block_length: int) -> int:
    return len(varint(len(bytes(cid)) + block_length)) + len(bytes(cid)) + block_length


def plan_of(store: Store, root: CID) -> tuple[CarPlan, frozenset[str]]:
    """The CAR plan of the DAG under ``root`` (the depth-first order of
    :func:`pipeline.export.snapshot.iter_blocks`, each block once) and every block's SHA-256 (hex).

    dag-pb nodes are read verified (their links are needed); a raw leaf's length is its store object's
    size (objects are stored as their bytes), so no leaf is read: making the CAR reads or copies each
    block and checks the result is this plan, section for section."""
    offset = len(car.header([root]))
    sections: list[Section] = []

    def node(cid: CID) -> bytes | None:
        return store.read_bytes(cid.hex_digest) if cid.codec == DAG_PB else None

    for cid, block in depth_first(root, node):
        if block is not None:
            length = len(block)
        else:
            try:
                length = store.object_path(cid.hex_digest).stat().st_size
            except FileNotFoundError:
                raise StoreError(f"block {cid} of {root} is not in the store {store.root}") from None
        n = _section(cid, length)
        sections.append(Section(bytes(cid), offset, n))
        offset += n
    return CarPlan(str(root), offset, tuple(sections)), frozenset(CID.from_bytes(s.cid).hex_digest for s in sections)


def save_plan(store: Store, plan: CarPlan) -> str:
    """Store the plan as a document (CID and length of each section; offsets and size follow); its digest."""
    return store.put_json({"kind": _PLAN_KIND, "schema": 1, "root": plan.root, "size": plan.size,
                           "sections": [[s.cid.hex(), s.length] for s in plan.sections]})


def load_plan(store: Store, digest: str, root: str, size: int) -> CarPlan | None:
    """The plan stored at ``digest`` (read verified) if it is a well-formed plan of ``root`` of ``size``
    bytes; None if absent, malformed or another CAR's."""
    if not HEX64.match(digest):
        return None
    try:
        doc = store.read_json(digest)
    except (IntegrityError, StoreError, ValueError, zstandard.ZstdError):
        return None
    if not isinstance(doc, dict) or (doc.get("kind"), doc.get("schema"), doc.get("root"), doc.get("size")) != \
            (_PLAN_KIND, 1, root, size):
        return None
    try:
        offset = len(car.header([CID.parse(root)]))
        sections = []
        for c, n in doc["sections"]:
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                return None
            sections.append(Section(bytes.fromhex(c), offset, n))
            offset += n
    except (KeyError, TypeError, ValueError):
        return None
    if offset != size:
        return None
    return CarPlan(root, size, tuple(sections))


def _made_key(root: str, plan: str, size: int) -> str:
    return key_of("car-made", root, plan, size)


def made_sha256(store: Store, root: str, plan: str, size: int, path: Path,
                recorded: str | None = None) -> tuple[str | None, str | None]:
    """(the SHA-256 of ``path``, None) if it is the CAR made from plan ``plan`` (its stamp is the one
    recorded when it was made or last hashed, or failing that its bytes hash to the recorded SHA-256:
    ``cache/car-checks``, or ``recorded``, an older snapshot record's); otherwise (None, why not).

    A file changed within 2 s of being hashed is not stamped (a write in the same clock tick as the
    hash would not show in the times: git's "racy" rule), so it is hashed again next time."""
    key = _made_key(root, plan, size)
    try:
        if not path.is_file():
            return None, f"{path} is missing"
        if path.stat().st_size != size:
            return None, f"{path} is {path.stat().st_size:,} bytes, its record says {size:,}"
        doc = _checks(store).get(key)
        expected = doc.get("sha256") if doc is not None else recorded
        if not isinstance(expected, str) or not HEX64.match(expected):
            return None, f"{path} is not recorded as made (no SHA-256 in {_checks(store).dir / key})"
        if doc is not None and doc.get("path") == str(path.resolve()) and doc.get("stamp") == car_stamp(path):
            return expected, None
        actual, _ = sha256_file(path)
        if actual != expected:
            return None, f"{path} hashes to {actual}, its record says {expected}"
        stamp = car_stamp(path)
    except OSError as e:
        return None, f"{path}: {e.strerror or e}"
    if time.time_ns() - max(stamp[3], stamp[4]) > 2_000_000_000:
        record_made(store, root, plan, size, expected, path)
    return expected, None


def record_made(store: Store, root: str, plan: str, size: int, sha256: str, path: Path) -> None:
    """Record the CAR made at ``path`` from plan ``plan``: its SHA-256, where it is and its stamp."""
    _checks(store).put(_made_key(root, plan, size),
                       {"sha256": sha256, "path": str(path.resolve()), "stamp": car_stamp(path)})


@dataclass(frozen=True)
class PreviousCar:
    path: Path
    plan: CarPlan
    by_cid: dict[bytes, Section]
    stamp: list[int]  # the file as it was checked; the copy is refused if the file it opens is not it


def previous_car(store: Store, plan: CarPlan, plan_digest: str, path: Path, log: Callable[[str], None],
                 recorded: str | None = None) -> PreviousCar | None:
    """A made CAR to copy runs from, if it is the recorded one (:func:`made_sha256`)."""
    _, why = made_sha256(store, plan.root, plan_digest, plan.size, path, recorded)
    if why is not None:
        log(f"car: not copying from the previous CAR ({why}): writing every block from the store")
        return None
    try:
        stamp = car_stamp(path)
    except OSError as e:
        log(f"car: not copying from the previous CAR ({path}: {e.strerror or e}): writing every block "
            "from the store")
        return None
    return PreviousCar(path, plan, {s.cid: s for s in plan.sections}, stamp)


class _RunMismatch(Exception):
    pass


def _walk(store: Store, root: CID, previous: PreviousCar | None) -> Iterator[tuple[CID, bytes | Section]]:
    """The depth-first walk of :func:`pipeline.export.snapshot.iter_blocks` (each block once, by digest),
    yielding a block already in ``previous`` as its section there, without reading it when it is raw."""
    old = previous.by_cid if previous is not None else {}

    def node(cid: CID) -> bytes | None:
        # dag-pb nodes are read for their links (they are small); a raw leaf only when not copied
        return store.read_bytes(cid.hex_digest) if cid.codec == DAG_PB or bytes(cid) not in old else None

    for cid, block in depth_first(root, node):
        section = old.get(bytes(cid))
        if section is not None:
            yield cid, section
        else:
            assert block is not None  # read above: not in the previous CAR
            yield cid, block


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
                        raise _RunMismatch(f"no section of {cid} where the previous CAR's plan puts it")
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
    previous CAR's plan says (the caller then writes again without ``previous``)."""
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
    plan = CarPlan(str(root), pos, tuple(sections))
    return CarWritten(pos, back.sha.hexdigest(), frozenset(digests), copied_blocks, copied_bytes, new_blocks, plan,
                      wrote - started, hashed - wrote)


def write_car_file(store: Store, root: CID, car_path: Path, previous: PreviousCar | None,
                   log: Callable[[str], None], expect: CarPlan | None = None,
                   expect_sha256: str | None = None) -> CarWritten:
    """Write ``car_path`` atomically (temp file beside it, fsync, rename), from ``previous`` where it can;
    a copied run that does not check is logged and the CAR is written again in full. What was written
    must be ``expect`` (the snapshot's plan) and hash to ``expect_sha256`` when given, else nothing is
    put in place."""
    car_path.parent.mkdir(parents=True, exist_ok=True)
    for source in ([previous, None] if previous is not None else [None]):
        try:
            fd, tmp = tempfile.mkstemp(dir=car_path.parent, prefix=f".{car_path.name}.")
        except OSError as e:
            raise StoreError(f"{car_path}: cannot write beside it: {e.strerror or e}; nothing was written") from e
        try:
            try:
                written = write_car(store, root, fd, source)
            except _RunMismatch as e:
                log(f"car: the previous CAR does not check ({e}): writing every block from the store")
                continue
            if expect is not None and (diff := expect.first_difference(written.plan)) is not None:
                raise IntegrityError(f"{car_path}: the DAG under {root} is not its recorded CAR plan ({diff}); "
                                     "nothing was written")
            if expect_sha256 is not None and written.sha256 != expect_sha256:
                raise IntegrityError(f"{car_path}: the CAR of {root} hashes to {written.sha256}, its snapshot "
                                     f"record says {expect_sha256}; nothing was written")
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
