"""A snapshot costs what changed (issue 15, item 4): the publish step's time and new blocks when
nothing changed and when one wheel changed, each against the time to SHA-256 the whole set once.

Synthetic set (random wheel-sized files in a fresh store, ``--wheels N --size BYTES``, 78 x ~13 MB
≈ 1 GB by default) through the same steps as ``snapshot.publish``: the wheels' cached imports
(``FileImports``, both profiles), the rendered PEP 503/691 tree, ``snapshot.build`` (DAG, CAR,
record; the new CAR copies the previous CAR's unchanged runs, pipeline/export/carcopy.py).
``--torrent`` also times the torrent of the changed snapshot. The conda channel is not part of it
(random bytes are not wheels); its cache is tested in tests/test_snapshot_incremental.py.
Run: ``.venv/bin/python benchmarks/snapshot_incremental.py [--torrent]``.
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

from pipeline.export import torrent  # noqa: E402
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
    ap.add_argument("--torrent", action="store_true",
                    help="also time the torrent of the changed snapshot (libtorrent hashes the whole tree)")
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
        first, t_first, n_first = publish(store, wheels)
        same, t_same, n_same = publish(store, wheels)
        assert same.root == first.root and n_same == 0
        same2, t_same2, _ = publish(store, wheels)
        data = rng.randbytes(wheels[0][2])
        wheels[0] = (wheels[0][0], store.put_bytes(data), len(data))
        changed, t_changed, n_changed = publish(store, wheels)
        print(f"set: {args.wheels} wheels, {total / 1e9:.2f} GB; SHA-256 of the whole set once: {hash_once:.2f} s")
        leaves = -(-len(data) // V1_2025.chunk_size)
        print(f"first snapshot:        {t_first:6.2f} s  ({first.blocks} blocks; {n_first} new store objects)")
        print(f"nothing changed:       {t_same:6.2f} s  ({n_same} new store objects; "
              f"{t_same / hash_once:.3f}x hash-once)  then {t_same2:.2f} s")
        print(f"one wheel changed:     {t_changed:6.2f} s  ({n_changed} new store objects for a "
              f"{len(data) / 1e6:.1f} MB wheel of {leaves} leaves + 1 file node; "
              f"{t_changed / hash_once:.2f}x hash-once)")
        w = changed.written
        assert w is not None
        print(f"  the new CAR:         {w.copied_blocks} blocks ({w.copied_bytes / 1e9:.2f} GB) copied from the "
              f"previous CAR, {w.new_blocks} read from the store; written in {w.write_seconds:.2f} s, "
              f"read back and hashed {w.hash_seconds:.2f} s later, final fsync {w.fsync_seconds:.2f} s")
        if args.torrent:
            start = time.perf_counter()
            torrent.write(store, changed.root, "http://127.0.0.1:8080")
            t_torrent = time.perf_counter() - start
            print(f"its torrent:           {t_torrent:6.2f} s  ({t_torrent / hash_once:.2f}x hash-once; "
                  "unpacked from verified blocks, then hashed whole by libtorrent)")


if __name__ == "__main__":
    main()
