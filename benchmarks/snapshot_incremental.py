"""A snapshot costs what changed (issue 15, item 4): the publish step's time and new blocks when
nothing changed and when one wheel changed, each against the time to SHA-256 the whole set once.

Synthetic set (random wheel-sized files in a fresh store, ``--wheels N --size BYTES``, 78 x ~13 MB
≈ 1 GB by default) through the same steps as ``snapshot.publish``: the wheels' cached imports
(``FileImports``, both profiles), the rendered PEP 503/691 tree, ``snapshot.build`` (DAG, the CAR's
plan, record). The CAR is not part of a snapshot: it is made on demand (``python -m pipeline car``,
``carmake.make_car``), timed here separately for reference, for the first snapshot (every block read
from the store) and for the one with a wheel changed (unchanged runs copied from the first made CAR,
pipeline/export/carcopy.py).
The torrent (``torrent.write``: assembled from per-file hashes, pipeline/export/torrentfiles.py) is
timed for the first snapshot (every file hashed), with nothing changed and with one wheel changed;
``--full-torrent`` also times libtorrent's full build of the changed tree (``torrent.make`` over the
unpacked snapshot, what ``torrent.write`` did before) for reference. The conda channel is not part of
it (random bytes are not wheels); its cache is tested in tests/test_snapshot_incremental.py.
Run: ``.venv/bin/python benchmarks/snapshot_incremental.py [--full-torrent]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.export import carcopy, torrent  # noqa: E402
from pipeline.export.carmake import make_car  # noqa: E402
from pipeline.export.fileimports import FileImports  # noqa: E402
from pipeline.export.ipfs.unixfs import V0_2015, V1_2025  # noqa: E402
from pipeline.export.snapshot import PublishedWheel, Snapshot, build, render  # noqa: E402
from pipeline.model.declaration import Artifact  # noqa: E402
from pipeline.store.local import Store  # noqa: E402


def publish(store: Store, wheels: list[tuple[str, str, int]]) -> tuple[Snapshot, float, int]:
    """What ``snapshot.publish`` does after the policy, on (project, sha256, size) wheels; the time and
    the objects it added to the store (blocks, cache documents, the record)."""
    before = sum(1 for _ in store.iter_objects())
    start = time.perf_counter()
    v0 = FileImports(store, V0_2015, store_blocks=False)
    v1 = FileImports(store, V1_2025)
    published = [PublishedWheel(p, "1.0", Artifact(f"{p}-1.0-py3-none-any.whl", "https://x.test/", sha, size),
                                None, "0" * 64, "identical", "d" * 64, str(v0.entry(sha).cid))
                 for p, sha, size in wheels]
    tree = render(published, lambda a: v1.entry(a.sha256), lambda w: b"Metadata-Version: 2.1\n")
    snap = build(store, tree, log=lambda m: None)
    took = time.perf_counter() - start
    return snap, took, sum(1 for _ in store.iter_objects()) - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--wheels", type=int, default=78)
    ap.add_argument("--size", type=int, default=13_500_000)
    ap.add_argument("--full-torrent", action="store_true",
                    help="also time libtorrent's full build of the changed snapshot's torrent, for reference")
    args = ap.parse_args()
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="snapinc-", dir=REPO) as tmp:
        store = Store(Path(tmp) / "store")
        wheels = []
        for i in range(args.wheels):
            data = rng.randbytes(rng.randint(args.size // 2, args.size * 3 // 2))
            wheels.append((f"project{i:03d}", store.put_bytes(data), len(data)))
        total = sum(s for _, _, s in wheels)
        start = time.perf_counter()
        for _, sha, _ in wheels:
            h = hashlib.sha256()
            with open(store.object_path(sha), "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        hash_once = time.perf_counter() - start
        seed = "http://127.0.0.1:8080"

        def timed_torrent(snap: Snapshot) -> tuple[float, str]:
            logs: list[str] = []
            start = time.perf_counter()
            torrent.write(store, snap.root, seed, log=logs.append)
            return time.perf_counter() - start, (logs[0].removeprefix("torrent: ") if logs else "reused")

        def timed_car(snap: Snapshot) -> tuple[float, carcopy.CarWritten]:
            start = time.perf_counter()
            made = make_car(store, snap.root, log=lambda m: None)
            assert made.written is not None and made.size == snap.car_size
            return time.perf_counter() - start, made.written

        first, t_first, n_first = publish(store, wheels)
        assert not first.car_path.exists()
        tt_first, why_first = timed_torrent(first)
        tc_first, _ = timed_car(first)
        same, t_same, n_same = publish(store, wheels)
        assert same.root == first.root and n_same == 0
        tt_same, why_same = timed_torrent(same)
        same2, t_same2, _ = publish(store, wheels)
        data = rng.randbytes(wheels[0][2])
        wheels[0] = (wheels[0][0], store.put_bytes(data), len(data))
        changed, t_changed, n_changed = publish(store, wheels)
        tt_changed, why_changed = timed_torrent(changed)
        tc_changed, w = timed_car(changed)

        def x(t: float) -> str:
            return f"{t / hash_once:.3f}x hash-once"

        print(f"set: {args.wheels} wheels, {total / 1e9:.2f} GB; SHA-256 of the whole set once: {hash_once:.2f} s")
        leaves = -(-len(data) // V1_2025.chunk_size)
        print(f"first snapshot:        {t_first:6.2f} s  ({first.blocks} blocks; {n_first} new store objects; "
              f"{x(t_first)})")
        print(f"  its torrent:         {tt_first:6.2f} s  ({why_first}; {x(tt_first)})")
        print(f"  the CAR on demand:   {tc_first:6.2f} s  (`python -m pipeline car`, for reference: every block "
              f"read from the store; {first.car_size / 1e9:.2f} GB; {x(tc_first)})")
        print(f"nothing changed:       {t_same:6.2f} s  ({n_same} new store objects; {x(t_same)})  "
              f"then {t_same2:.2f} s")
        print(f"  its torrent:         {tt_same:6.2f} s  ({why_same}; {x(tt_same)})")
        print(f"one wheel changed:     {t_changed:6.2f} s  ({n_changed} new store objects; {changed.blocks} blocks, of "
              f"which {changed.new_blocks} pages/directories new to the store beside the wheel's; "
              f"for a {len(data) / 1e6:.1f} MB wheel of {leaves} leaves + 1 file node; "
              f"{x(t_changed)})")
        print(f"  the CAR on demand:   {tc_changed:6.2f} s  (`python -m pipeline car`, for reference, not part of "
              f"the snapshot; {w.copied_blocks} blocks ({w.copied_bytes / 1e9:.2f} GB) copied from the first made "
              f"CAR, {w.new_blocks} read from the store; written in {w.write_seconds:.2f} s, read back and hashed "
              f"{w.hash_seconds:.2f} s later, final fsync {w.fsync_seconds:.2f} s; {x(tc_changed)})")
        print(f"  its torrent:         {tt_changed:6.2f} s  ({why_changed}; {x(tt_changed)})")
        if args.full_torrent:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="torrent-", dir=store.tmp) as unpacked:
                full = torrent.make(torrent.unpack(store, changed.root, Path(unpacked)), seed + "/ipfs/")
            t_full = time.perf_counter() - start
            same_bytes = full == torrent.torrent_path(store, changed.root).read_bytes()
            print(f"  full torrent build:  {t_full:6.2f} s  (unpack + libtorrent hashing the whole tree; "
                  f"{x(t_full)}; byte-identical to the assembled one: {same_bytes})")

if __name__ == "__main__":
    main()
