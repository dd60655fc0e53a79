"""A snapshot costs what changed (issue 15, item 4): cached imports, conda packages, CAR and torrent.

The root CID must be exactly the one a full import of the same bytes computes; a snapshot with
nothing changed walks and writes nothing; a corrupt cache entry or CAR is a miss, never trusted.
"""

from __future__ import annotations

import hashlib
import os

from pipeline.export import conda, formats, torrent
from pipeline.export.carmake import make_car
from pipeline.export.ipfs import car
from pipeline.export.ipfs.unixfs import cid_of_tree
from pipeline.export.snapshot import publish, render
from pipeline.realise.fetch import fetch
from pipeline.store.local import Store
from pipeline.wheel.facts import facts_for
from tests.conftest import build_record
from tests.test_formats import ENVS


def _snapshot(world, store=None, with_formats=False, **extra_files: str):
    store = store or world.store
    lib = world.declare_tiny("tiny-lib", "2.0", files={"tiny_lib.py": "VALUE = 42\n", **extra_files})
    app = world.declare_tiny("tiny-app", "1.0", dependencies=["tiny-lib>=2"],
                             files={"tiny_app.py": "from tiny_lib import VALUE\n"})
    decls = {"tiny-app": app, "tiny-lib": lib}
    for d in decls.values():
        for w in d.wheels:
            fetch(store, w, what=str(d.path))
    records = {n: build_record("d" * 64, "identical", n) for n in decls}
    hook = formats.subtrees(ENVS, "http://gw.test", log=lambda m: None, store=store) if with_formats else None
    logs: list[str] = []
    snap, published = publish(store, decls, records, lambda d, w: facts_for(store, w.sha256, w.filename).metadata
                              or b"", log=logs.append, subtrees=hook)
    return snap, published, logs


def test_cached_root_is_the_full_import_root(world):
    snap, published, _ = _snapshot(world)
    again, _, logs = _snapshot(world)
    assert again.root == snap.root and "2 wheels imported before, 0 imported now" in " ".join(logs)
    # the same tree with every wheel's bytes (no cache at all) gives the same root CID
    store = world.store
    tree = render(published, lambda a: store.read_bytes(a.sha256),  # type: ignore[arg-type,return-value]
                  lambda w: store.read_bytes(w.metadata_sha256))
    assert cid_of_tree(tree) == snap.root
    wheel_entry = render(published, lambda a: store.verified_path(a.sha256),
                         lambda w: store.read_bytes(w.metadata_sha256))
    assert cid_of_tree(wheel_entry) == snap.root
    # and a fresh store computes it too
    fresh, _, fresh_logs = _snapshot(world, Store(world.root / "fresh-store"))
    assert fresh.root == snap.root and fresh.car_plan == snap.car_plan
    assert "0 wheels imported before, 2 imported now" in " ".join(fresh_logs)


def test_nothing_changed_reuses_the_plan_and_a_made_car(world):
    snap, _, _ = _snapshot(world)
    assert not snap.car_path.exists()  # the snapshot records the plan, it does not write the CAR
    objects = set(world.store.iter_objects())
    again, _, logs = _snapshot(world)
    assert any("unchanged: reusing its CAR plan" in m for m in logs)
    assert (again.car_plan, again.car_size, again.blocks, again.new_blocks, again.manifest) == \
        (snap.car_plan, snap.car_size, snap.blocks, 0, snap.manifest)
    assert set(world.store.iter_objects()) == objects
    made = make_car(world.store, snap.root, log=lambda m: None)
    assert made.written is not None and made.path == snap.car_path
    assert hashlib.sha256(made.path.read_bytes()).hexdigest() == made.sha256 and made.size == snap.car_size
    before = made.path.stat()
    logs = []
    again = make_car(world.store, log=logs.append)  # the latest snapshot: reused by its stamp, not hashed
    after = made.path.stat()
    assert again.written is None and again.sha256 == made.sha256
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert logs == [f"car: {made.path} is made and checks ({made.size:,} bytes, sha256 {made.sha256})"]


def test_a_corrupt_made_car_is_made_again(world):
    snap, _, _ = _snapshot(world)
    made = make_car(world.store, snap.root, log=lambda m: None)
    data = bytearray(made.path.read_bytes())
    data[-1] ^= 1
    made.path.write_bytes(bytes(data))  # same size, other bytes (and a new mtime/ctime)
    logs: list[str] = []
    again = make_car(world.store, snap.root, log=logs.append)
    assert again.written is not None and again.sha256 == made.sha256
    assert any(f"hashes to {hashlib.sha256(data).hexdigest()}" in m and "making it again" in m for m in logs), logs
    roots, blocks = car.read(again.path.read_bytes())
    assert roots == [snap.root] and len(list(blocks)) == snap.blocks


def test_a_corrupt_cache_entry_is_a_miss(world):
    snap, _, _ = _snapshot(world)
    pointers = sorted((world.store.root / "cache" / "unixfs-files").iterdir())
    assert pointers
    for p in pointers:  # point every entry at another document: each must be recomputed
        p.write_text(pointers[0].read_text() if p != pointers[0] else "0" * 64 + "\n")
    again, _, logs = _snapshot(world)
    assert again.root == snap.root and "0 wheels imported before, 2 imported now" in " ".join(logs)


def test_one_wheel_changed_imports_one_wheel(world):
    first, _, _ = _snapshot(world)
    second, _, logs = _snapshot(world, **{"extra.py": "X = 1\n"})
    assert second.root != first.root
    assert "1 wheels imported before, 1 imported now" in " ".join(logs)
    # new blocks: the changed wheel's pages, .metadata, directories above it, status page, manifest
    assert second.new_blocks <= 9


def test_conda_packages_are_converted_once(world, monkeypatch):
    snap, _, _ = _snapshot(world, with_formats=True)
    torrent_path, info = torrent.write(world.store, snap.root, "http://gw.test")
    mtime = torrent_path.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("a cached wheel was converted again")

    monkeypatch.setattr(conda, "convert", no_conversion)
    again, _, logs = _snapshot(world, with_formats=True)
    assert again.root == snap.root and any("unchanged: reusing" in m for m in logs)
    path2, info2 = torrent.write(world.store, again.root, "http://gw.test")
    assert path2.stat().st_mtime_ns == mtime and info2 == info
    # a tampered torrent is made again, not reused
    size = path2.stat().st_size
    os.truncate(path2, size - 1)
    path3, info3 = torrent.write(world.store, again.root, "http://gw.test")
    assert info3 == info and path3.stat().st_size == size


def _tree(seed: int, changed: bytes | None = None) -> dict:
    """A tree with multi-chunk files (dag-pb file nodes over 1 MiB raw leaves), small files, a duplicate
    file in two places (a block the depth-first walk meets twice) and nested directories."""
    import random

    from pipeline.export.ipfs.unixfs import V1_2025

    rng = random.Random(seed)
    big = {f"p{i}": {f"p{i}-1.0.whl": rng.randbytes(V1_2025.chunk_size * 2 + 1000 * i),
                     "index.html": f"<a>p{i}</a>".encode()} for i in range(4)}
    shared = rng.randbytes(5000)
    big["p1"]["same.bin"] = shared
    big["p3"]["same.bin"] = shared
    if changed is not None:
        big["p2"]["p2-1.0.whl"] = changed
    return {"index.html": b"top", "simple": big}


def built_and_made(store: Store, tree: dict, log=lambda m: None):
    """``snapshot.build`` then ``make_car`` of its root: what ``doit snapshot`` then ``doit car`` do."""
    from pipeline.export.snapshot import build

    snap = build(store, tree, log=log)
    return snap, make_car(store, snap.root, log=log)


def test_an_incremental_car_is_byte_for_byte_a_full_write(tmp_path):
    import random

    store = Store(tmp_path / "store")
    first, first_car = built_and_made(store, _tree(1))
    assert first_car.written is not None and first_car.written.copied_blocks == 0
    logs: list[str] = []
    changed = random.Random(2).randbytes(3 * 1024 * 1024 + 17)
    second, second_car = built_and_made(store, _tree(1, changed), logs.append)
    assert second.root != first.root
    w = second_car.written
    assert w is not None and second_car.source == first_car.path
    # the changed file's 4 leaves and its node, its directory, simple/ and the root: 8 blocks written
    assert (w.new_blocks, w.copied_blocks) == (8, second.blocks - 8)
    assert any(f"copied from {first.car_path.name}" in m for m in logs)
    fresh, fresh_car = built_and_made(Store(tmp_path / "fresh"), _tree(1, changed))
    assert fresh_car.written is not None and fresh_car.written.copied_blocks == 0
    assert (fresh.root, fresh.car_plan, fresh_car.sha256, fresh_car.size) == \
        (second.root, second.car_plan, second_car.sha256, second_car.size)
    assert second.car_path.read_bytes() == fresh.car_path.read_bytes()
    roots, blocks = car.read(second.car_path.read_bytes())  # every block verifies against its CID
    assert roots == [second.root] and len(list(blocks)) == second.blocks
    # a CAR copied from a copied CAR (through the plan of the copy) is still the full write
    small = b"now one leaf"
    third, third_car = built_and_made(store, _tree(1, small))
    assert third_car.written is not None and third_car.written.new_blocks == 4  # the leaf, p2/, simple/, root
    full, _ = built_and_made(Store(tmp_path / "fresh3"), _tree(1, small))
    assert third.car_path.read_bytes() == full.car_path.read_bytes() and third.root == full.root


def test_a_snapshot_writes_no_car_and_its_plan_is_the_made_cars_sections(tmp_path):
    """The snapshot's cost is its new blocks and a few documents: no CAR file; the plan it records
    (every section's CID and length) is exactly the CAR made later, and ``-o FILE`` writes the same."""
    import random

    from pipeline.export import carcopy
    from pipeline.export.snapshot import build, snapshot_record

    store = Store(tmp_path / "store")
    first = build(store, _tree(4), log=lambda m: None)
    changed = random.Random(3).randbytes(2 * 1024 * 1024 + 3)
    second = build(store, _tree(4, changed), log=lambda m: None)
    assert not (store.root / "cars").exists() or not list((store.root / "cars").iterdir())
    record = snapshot_record(store)
    assert record is not None and record.root == str(second.root) and record.car.sha256 is None
    assert record.car.index == second.car_plan and second.car_plan in record.references  # gc keeps it
    plan = carcopy.load_plan(store, second.car_plan, str(second.root), second.car_size)
    assert plan is not None and len(plan.sections) == second.blocks
    out = tmp_path / "elsewhere" / "x.car"
    made = make_car(store, second.root, out, log=lambda m: None)
    assert made.path == out and made.written is not None and made.written.plan == plan
    assert out.stat().st_size == second.car_size == plan.size
    assert first.root != second.root and not second.car_path.exists()
