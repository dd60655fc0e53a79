"""A made CAR that is not what its record says is neither reused nor copied from
(pipeline/export/carmake.py, pipeline/export/carcopy.py).

Making a snapshot's CAR copies the runs of unchanged blocks from a previous made CAR without reading
them through the store. A previous CAR with a flipped byte inside a copied run, a truncated one, or a
plan that lies about where sections are, is detected, said in the log, and the CAR is written in full
from verified store blocks: the result is the full write's bytes, and nothing is left behind. A made
CAR tampered with is made again, not reused; a plan that is not the DAG's is refused before anything
is put in place; ``python -m pipeline car`` with a bad root or no snapshot fails with a clear message.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from pipeline.export import carcopy
from pipeline.export.carmake import make_car
from pipeline.export.ipfs import car
from pipeline.export.snapshot import SNAPSHOT_KIND, build, snapshot_record
from pipeline.model.errors import IntegrityError, StoreError
from pipeline.model.records import CarRef, SnapshotRecord, encode
from pipeline.store.local import Store

from ..test_snapshot_incremental import _tree, built_and_made

CHANGED = random.Random(7).randbytes(2 * 1024 * 1024 + 5)


def _first_and_full(tmp_path):
    store = Store(tmp_path / "store")
    first, first_car = built_and_made(store, _tree(3))
    _, full_car = built_and_made(Store(tmp_path / "full"), _tree(3, CHANGED))
    return store, first, first_car, full_car


def _cars_dir_clean(store):
    assert [p.name for p in (store.root / "cars").iterdir() if p.name.startswith(".")] == []  # no temp file
    assert list(store.tmp.iterdir()) == []


def _check_full_write(store, logs, full_car, needle):
    second, second_car = built_and_made(store, _tree(3, CHANGED), logs.append)
    assert any(needle in m and "writing every block from the store" in m for m in logs), logs
    assert second_car.written is not None and second_car.written.copied_blocks == 0
    data = second_car.path.read_bytes()
    assert data == full_car.path.read_bytes() and second_car.sha256 == full_car.sha256
    roots, blocks = car.read(data)
    assert roots == [second.root] and len(list(blocks)) == second.blocks
    _cars_dir_clean(store)


def test_a_flipped_byte_inside_a_copied_run_is_not_copied(tmp_path):
    store, first, first_car, full_car = _first_and_full(tmp_path)
    plan = carcopy.load_plan(store, first.car_plan, str(first.root), first.car_size)
    assert plan is not None
    leaf = plan.sections[-1]  # a block the next CAR would copy: flip a byte inside its data
    with open(first_car.path, "r+b") as f:
        f.seek(leaf.offset + leaf.length - 1)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    logs: list[str] = []
    _check_full_write(store, logs, full_car, "hashes to")
    assert first_car.path.name in " ".join(logs)


def test_a_truncated_previous_car_is_not_copied(tmp_path):
    store, first, first_car, full_car = _first_and_full(tmp_path)
    os.truncate(first_car.path, first.car_size - 100)
    logs: list[str] = []
    _check_full_write(store, logs, full_car, f"{first.car_size - 100:,} bytes, its record says {first.car_size:,}")


def test_an_unrecorded_previous_car_is_not_copied(tmp_path):
    """A file in cars/ under a snapshot's name that no make recorded (dropped in by hand, or its check
    document gone with gc) is hashed against nothing and not trusted."""
    store, first, first_car, full_car = _first_and_full(tmp_path)
    for p in (store.root / "cache" / "car-checks").iterdir():
        p.unlink()
    logs: list[str] = []
    _check_full_write(store, logs, full_car, "is not recorded as made")


@pytest.mark.parametrize("lie", ["swapped", "shifted"])
def test_a_plan_that_lies_is_caught_where_the_run_lands(tmp_path, lie):
    """A forged plan for the previous CAR (its record pointed at it, its made CAR recorded under it)
    names sections where they are not: the copied run's prefixes do not match, the copy is abandoned
    and the CAR written in full."""
    store, first, first_car, full_car = _first_and_full(tmp_path)
    plan = carcopy.load_plan(store, first.car_plan, str(first.root), first.car_size)
    assert plan is not None
    s = list(plan.sections)
    if lie == "swapped":  # two sections' CIDs exchanged (same length): each run's prefix is another block's
        i = next(k for k in range(len(s) - 1, 0, -1) if s[k].length == s[k - 1].length)
        s[i], s[i - 1] = (carcopy.Section(s[i - 1].cid, s[i].offset, s[i].length),
                          carcopy.Section(s[i].cid, s[i - 1].offset, s[i - 1].length))
    else:  # every CID moved one section on
        s = [carcopy.Section(s[i - 1].cid, x.offset, x.length) for i, x in enumerate(s)]
    forged = carcopy.save_plan(store, carcopy.CarPlan(plan.root, plan.size, tuple(s)))
    record = SnapshotRecord(str(first.root), CarRef(first.car_size, forged), ())
    store.set_ref(SNAPSHOT_KIND, str(first.root), store.put_json(encode(record)))
    carcopy.record_made(store, str(first.root), forged, first.car_size, first_car.sha256, first_car.path)
    logs: list[str] = []
    _check_full_write(store, logs, full_car, "the previous CAR does not check (no section of")


def test_a_tampered_made_car_is_made_again_not_reused(tmp_path):
    store = Store(tmp_path / "store")
    snap, made = built_and_made(store, _tree(5))
    good = made.path.read_bytes()
    evil = bytearray(good)
    evil[len(evil) // 2] ^= 0x40  # inside a block: same size, new stamp
    made.path.write_bytes(bytes(evil))
    logs: list[str] = []
    again = make_car(store, snap.root, log=logs.append)
    assert any("hashes to" in m and "making it again" in m for m in logs), logs
    assert again.written is not None and again.path.read_bytes() == good and again.sha256 == made.sha256
    # a made CAR replaced by another snapshot's CAR of the same size is not reused either
    os.truncate(made.path, 10)
    logs.clear()
    again = make_car(store, snap.root, log=logs.append)
    assert any(f"is 10 bytes, its record says {snap.car_size:,}" in m for m in logs), logs
    assert again.path.read_bytes() == good
    _cars_dir_clean(store)


def test_a_plan_that_is_not_the_dag_is_refused_and_nothing_is_written(tmp_path):
    """A snapshot record pointing at another DAG's plan (a forged or mixed-up record): the CAR written
    from the DAG is not the plan, so nothing is put in place and the error names the first difference."""
    store = Store(tmp_path / "store")
    a = build(store, _tree(6), log=lambda m: None)
    b = build(store, _tree(6, CHANGED), log=lambda m: None)
    plan_b = carcopy.load_plan(store, b.car_plan, str(b.root), b.car_size)
    assert plan_b is not None
    lying = carcopy.save_plan(store, carcopy.CarPlan(str(a.root), plan_b.size, plan_b.sections))
    record = SnapshotRecord(str(a.root), CarRef(plan_b.size, lying), ())
    store.set_ref(SNAPSHOT_KIND, str(a.root), store.put_json(encode(record)))
    assert snapshot_record(store, a.root) == record
    with pytest.raises(IntegrityError, match=r"is not its recorded CAR plan \(.*; nothing was written"):
        make_car(store, a.root, log=lambda m: None)
    assert not a.car_path.exists()
    _cars_dir_clean(store)


def test_car_command_refuses_bad_roots_with_a_clear_message(tmp_path):
    env = {**os.environ, "WHEELPROOF_STORE": str(tmp_path / "store")}
    out = subprocess.run([sys.executable, "-m", "pipeline", "car", "../../etc/passwd"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 1 and "car: '../../etc/passwd' is not a CID" in out.stderr
    out = subprocess.run([sys.executable, "-m", "pipeline", "car"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 1 and "no latest snapshot in the store" in out.stderr
    assert not (tmp_path / "store" / "cars").exists()
    with pytest.raises(StoreError, match="no snapshot bafy"):
        make_car(Store(tmp_path / "store"), build(Store(tmp_path / "other"), _tree(1), log=lambda m: None).root)
