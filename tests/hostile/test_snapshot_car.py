"""A previous CAR that is not what its record says must not be copied from (pipeline/export/carcopy.py).

Writing a snapshot's CAR copies the runs of unchanged blocks from the latest snapshot's CAR without
reading them through the store. A previous CAR with a flipped byte inside a copied run, a truncated
one, or a section index that lies about where sections are, is detected, said in the log, and the
CAR is written in full from verified store blocks: the result is the full write's bytes, and nothing
is left in the store's tmp/.
"""

from __future__ import annotations

import os
import random

import pytest

from pipeline.export import carcopy
from pipeline.export.ipfs import car
from pipeline.export.snapshot import build
from pipeline.store.local import Store

from ..test_snapshot_incremental import _tree

CHANGED = random.Random(7).randbytes(2 * 1024 * 1024 + 5)


def _first_and_full(tmp_path):
    store = Store(tmp_path / "store")
    first = build(store, _tree(3), log=lambda m: None)
    full = build(Store(tmp_path / "full"), _tree(3, CHANGED), log=lambda m: None)
    return store, first, full


def _check_full_write(store, logs, full, needle):
    second = build(store, _tree(3, CHANGED), log=logs.append)
    assert any(needle in m and "writing every block from the store" in m for m in logs), logs
    assert second.written is not None and second.written.copied_blocks == 0
    data = second.car_path.read_bytes()
    assert data == full.car_path.read_bytes() and second.car_sha256 == full.car_sha256
    roots, blocks = car.read(data)
    assert roots == [second.root] and len(list(blocks)) == second.blocks
    assert list(store.tmp.iterdir()) == []  # no temp file left behind


def test_a_flipped_byte_inside_a_copied_run_is_not_copied(tmp_path):
    store, first, full = _first_and_full(tmp_path)
    index = carcopy.load_index(store, str(first.root), first.car_sha256, first.car_size)
    assert index is not None
    leaf = index.sections[-1]  # a block the next CAR would copy: flip a byte inside its data
    with open(first.car_path, "r+b") as f:
        f.seek(leaf.offset + leaf.length - 1)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    logs: list[str] = []
    _check_full_write(store, logs, full, "hashes to")
    assert first.car_path.name in " ".join(logs)


def test_a_truncated_previous_car_is_not_copied(tmp_path):
    store, first, full = _first_and_full(tmp_path)
    os.truncate(first.car_path, first.car_size - 100)
    logs: list[str] = []
    _check_full_write(store, logs, full, f"{first.car_size - 100:,} bytes, its record says {first.car_size:,}")


def test_a_missing_previous_car_is_not_copied(tmp_path):
    store, first, full = _first_and_full(tmp_path)
    first.car_path.unlink()
    logs: list[str] = []
    _check_full_write(store, logs, full, "is missing")


@pytest.mark.parametrize("lie", ["swapped", "shifted"])
def test_a_section_index_that_lies_is_caught_where_the_run_lands(tmp_path, lie):
    """The index is a store document and checks; a forged one (another CAR's, or edited and stored
    again under the same key) names sections where they are not: the copied run's prefixes do not
    match, the copy is abandoned and the CAR written in full."""
    store, first, full = _first_and_full(tmp_path)
    index = carcopy.load_index(store, str(first.root), first.car_sha256, first.car_size)
    assert index is not None
    s = list(index.sections)
    if lie == "swapped":  # two sections' CIDs exchanged: each run's prefix is another block's
        s[-1], s[-2] = (carcopy.Section(s[-2].cid, s[-1].offset, s[-1].length),
                        carcopy.Section(s[-1].cid, s[-2].offset, s[-2].length))
    else:  # every CID moved one section on
        s = [carcopy.Section(s[i - 1].cid, x.offset, x.length) for i, x in enumerate(s)]
    carcopy.save_index(store, carcopy.CarIndex(index.root, index.sha256, index.size, tuple(s)))
    logs: list[str] = []
    _check_full_write(store, logs, full, "the previous CAR does not check (no section of")
