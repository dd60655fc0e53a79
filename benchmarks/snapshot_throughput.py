"""DAG + CAR export throughput as a ratio to plain SHA-256 over the same bytes, the same tree imported
by npm's ipfs-unixfs-importer for a side-by-side ratio, and store growth when one wheel changes.

Uses a synthetic snapshot-shaped tree (index pages plus N wheel-sized random files) so it runs
without built declarations; `--wheels N --size BYTES` change its shape.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.export.ipfs import car  # noqa: E402
from pipeline.export.ipfs.unixfs import V1_2025, Importer  # noqa: E402
from pipeline.export.snapshot import build, walk  # noqa: E402
from pipeline.store.local import Store  # noqa: E402


def make_tree(n: int, size: int, rng: random.Random) -> dict:
    simple: dict = {}
    for i in range(n):
        name = f"project{i:04d}"
        wheel = rng.randbytes(rng.randint(size // 4, size * 2))
        simple[name] = {"index.html": f"<a href='{name}-1.0-py3-none-any.whl'>x</a>\n".encode(),
                        f"{name}-1.0-py3-none-any.whl": wheel}
    simple["index.html"] = b"".join(f"<a href='{p}/'>{p}</a>\n".encode() for p in simple)
    return {"simple": simple}


def flatten(tree: dict) -> list[bytes]:
    out = []
    for v in tree.values():
        out.extend(flatten(v) if isinstance(v, dict) else [v])
    return out


def write_tree(root: Path, tree: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k, v in tree.items():
        write_tree(root / k, v) if isinstance(v, dict) else (root / k).write_bytes(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=int, default=200)
    ap.add_argument("--size", type=int, default=400_000)
    args = ap.parse_args()
    tree = make_tree(args.wheels, args.size, random.Random(7))
    total = sum(len(b) for b in flatten(tree))

    t = time.perf_counter()
    for b in flatten(tree):
        hashlib.sha256(b).digest()
    sha_s = time.perf_counter() - t

    blocks: dict[bytes, bytes] = {}
    t = time.perf_counter()
    root = Importer(V1_2025, lambda c, b: blocks.setdefault(bytes(c), b)).tree(tree).cid
    out = io.BytesIO()
    from pipeline.export.ipfs.multiformats import CID
    car.write(out, [root], ((CID.from_bytes(k), v) for k, v in blocks.items()))
    dag_s = time.perf_counter() - t
    print(f"{total / 1e6:.1f} MB in {args.wheels} wheels: sha256 {total / sha_s / 1e6:.0f} MB/s; "
          f"DAG+CAR {total / dag_s / 1e6:.0f} MB/s; ratio DAG+CAR / sha256 time = {dag_s / sha_s:.2f}x")

    js = REPO / "tests" / "js"
    if (js / "node_modules").is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            write_tree(Path(tmp) / "snap", tree)
            t = time.perf_counter()
            cid = subprocess.run(["node", str(js / "import.mjs"), str(Path(tmp) / "snap")], check=True,
                                 capture_output=True, text=True).stdout.strip()
            js_s = time.perf_counter() - t
        same = "same root CID" if cid == str(root) else f"DIFFERENT root {cid}"
        print(f"ipfs-unixfs-importer (node, incl. start-up and reading files): {js_s:.2f}s vs ours {dag_s:.2f}s "
              f"= {js_s / dag_s:.2f}x; {same}")
    else:
        print("ipfs-unixfs-importer: skipped (run `npm ci` in tests/js)")

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        first = build(store, tree, log=lambda m: None)
        before = sum(p.stat().st_size for p in store.objects.rglob("*") if p.is_file())
        some = sorted(k for k in tree["simple"] if k != "index.html")[args.wheels // 2]
        wheel_name = f"{some}-1.0-py3-none-any.whl"
        tree["simple"][some][wheel_name] = os.urandom(len(tree["simple"][some][wheel_name]))
        second = build(store, tree, log=lambda m: None)
        after = sum(p.stat().st_size for p in store.objects.rglob("*") if p.is_file())
        changed = len({c for c, _ in walk(store, second.root)} - {c for c, _ in walk(store, first.root)})
        print(f"store growth when one wheel ({len(tree['simple'][some][wheel_name]):,} bytes) changes: "
              f"{after - before:,} bytes in {second.new_blocks} new blocks ({changed} blocks differ "
              f"between the two snapshots, of {second.blocks})")


if __name__ == "__main__":
    main()
