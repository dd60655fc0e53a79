"""Making a snapshot's CARv1 on demand (https://ipld.io/specs/transport/car/carv1/).

A snapshot records its CAR's plan (pipeline/export/carcopy.py), not its bytes: a new CAR is a new file
of the set's size, whatever it is copied from. :func:`make_car` (``python -m pipeline car [ROOT] [-o
FILE]``, ``doit car``, and ``doit publish`` when the CAR is not made yet) writes those bytes: the
depth-first walk of the DAG, each block once (the gateway's ``?format=car``, ``order=dfs; dups=n``),
copying unchanged runs from a previous made CAR where one checks, reading every other block verified
from the store, hashing the file while it is written. What was written must be the recorded plan,
section for section; then its SHA-256 and stamp are recorded (``cache/car-checks``, keyed by root, plan
and size), so a later call, or the release that signs the CAR's SHA-256 and size, reuses it with a
stamp check. A made CAR whose stamp changed is hashed again; one that does not hash to the recorded
SHA-256 (tampered, truncated) is made again, and the log says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.export import carcopy
from pipeline.export.ipfs.multiformats import CID
from pipeline.export.snapshot import car_path, snapshot_record
from pipeline.model.errors import StoreError
from pipeline.model.records import SnapshotRecord
from pipeline.store.local import Store

__all__ = ["MadeCar", "make_car"]

_CANDIDATES = 3  # previous made CARs tried as a copy source, newest first


@dataclass(frozen=True)
class MadeCar:
    """A made CAR: where, its size and SHA-256 (what a release signs), and how it was made."""

    root: CID
    path: Path
    size: int
    sha256: str
    blocks: int
    written: carcopy.CarWritten | None  # None: the CAR was already made and checks
    source: Path | None = None          # the previous made CAR runs were copied from


def _plan(store: Store, record: SnapshotRecord, root: CID,
          log: Callable[[str], None]) -> tuple[carcopy.CarPlan, str]:
    """The record's plan and its digest; an older record (no plan) or a plan gc removed is walked again."""
    if record.car.index is not None:
        plan = carcopy.load_plan(store, record.car.index, record.root, record.car.size)
        if plan is not None:
            return plan, record.car.index
        log(f"car: the plan {record.car.index} of {root} is missing or malformed: walking the DAG again")
    plan, _ = carcopy.plan_of(store, root)
    if plan.size != record.car.size:
        raise StoreError(f"refs/snapshots/{root}: the DAG's CAR is {plan.size:,} bytes, the snapshot record says "
                         f"{record.car.size:,}")
    return plan, carcopy.save_plan(store, plan)


def _previous(store: Store, root: CID, dest: Path, log: Callable[[str], None]) -> carcopy.PreviousCar | None:
    """The newest made CAR of another snapshot in ``<store>/cars/`` that is the recorded one."""
    cars = store.root / "cars"
    try:
        found = sorted((p for p in cars.glob("*.car") if p.is_file() and not p.is_symlink()),
                       key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return None
    tried = 0
    for path in found:
        if tried >= _CANDIDATES:
            break
        if path.resolve() == dest.resolve():
            continue
        try:
            other = CID.parse(path.stem)  # a name that is not a CID is not a made CAR
        except ValueError:
            continue
        if other == root:
            continue
        record = snapshot_record(store, other)
        if record is None:
            continue
        tried += 1
        plan, digest = _plan(store, record, other, log)
        previous = carcopy.previous_car(store, plan, digest, path, log, record.car.sha256)
        if previous is not None:
            return previous
    return None


def make_car(store: Store, root: CID | None = None, dest: Path | None = None,
             log: Callable[[str], None] = print) -> MadeCar:
    """Make the CAR of snapshot ``root`` (default: the latest) at ``dest`` (default:
    ``<store>/cars/<root>.car``), or reuse it there if it is made and checks."""
    with store.shared():
        record = snapshot_record(store, root)
        if record is None:
            what = f"snapshot {root}" if root is not None else "latest snapshot"
            raise StoreError(f"no {what} in the store {store.root} (run `doit snapshot`)")
        root = CID.parse(record.root)
        dest = dest if dest is not None else car_path(store, root)
        plan, digest = _plan(store, record, root, log)
        sha, why = carcopy.made_sha256(store, record.root, digest, plan.size, dest, record.car.sha256)
        if sha is not None:
            log(f"car: {dest} is made and checks ({plan.size:,} bytes, sha256 {sha})")
            return MadeCar(root, dest, plan.size, sha, len(plan.sections), None)
        if dest.exists():
            log(f"car: {why}: making it again")
        previous = _previous(store, root, dest, log)
        written = carcopy.write_car_file(store, root, dest, previous, log, expect=plan,
                                         expect_sha256=record.car.sha256)
        carcopy.record_made(store, record.root, digest, written.size, written.sha256, dest)
    copied = (f"{written.copied_blocks} blocks ({written.copied_bytes:,} bytes) copied from {previous.path.name}, "
              if previous is not None and written.copied_blocks else "")
    log(f"car: {dest} ({written.size:,} bytes, sha256 {written.sha256}, {len(plan.sections)} blocks; "
        f"{copied}{written.new_blocks} read from the store)")
    return MadeCar(root, dest, written.size, written.sha256, len(plan.sections), written,
                   previous.path if previous is not None and written.copied_blocks else None)
