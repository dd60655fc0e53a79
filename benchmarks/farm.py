"""The build farm against local builds, on this machine (run from the repository root with the venv).

Generates N tiny declarations (the in-tree backend of tests/conftest.py, each build slowed by a
``--work`` second hook so it is dominated by build time, as real builds are), serves their files on
127.0.0.1, and times ``doit build`` with a fresh coordinator store:

- local: no farm (doit's default, one build at a time);
- farm of 1 worker, farm of 2 workers: a real ``dask scheduler`` and ``python -m pipeline worker``
  processes with their own (fresh) stores and keys; speedup = local / farm wall time.

Then the scheduler overhead per node with trivial nodes: no-op tasks through the same scheduler and
resources (one at a time: latency; 500 at once: throughput), and the same N actions again against a
fresh coordinator store but the workers' warm stores (mostly worker-cache hits: submission, scheduling,
transfer, verification and storing per node, plus doit's and the client's start-up).
The last line reads ``farm: N nodes: local L s, 1 worker A s (xS1), 2 workers B s (xS2); scheduler overhead O ms/node``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import DOIT, REPO

from tests.conftest import World, _QuietFiles
from tests.farm import start_farm


def _doit(world: World, env: dict[str, str], store: Path) -> float:
    store.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run = subprocess.run([*DOIT, "run", "-f", str(REPO / "dodo.py"), "--db-file", str(store.parent / "doit.db"),
                          "build"], env={**world.env(), "WHEELPROOF_STORE": str(store), **env}, cwd=world.root,
                         capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if run.returncode != 0:
        raise SystemExit(f"doit build failed:\n{run.stdout}\n{run.stderr}")
    if env:
        print("   ", run.stderr.strip().splitlines()[-1])
    return elapsed


def _noop(i: int) -> int:
    return i


def _trivial(address: str, n: int = 500) -> tuple[float, float]:
    """Milliseconds per trivial node through the scheduler (with the platform resource): in sequence, in bulk."""
    from distributed import Client

    from pipeline.farm.action import platform_resource

    with Client(address, set_as_default=False) as client:
        resources = {platform_resource(): 1}
        t0 = time.monotonic()
        for i in range(50):
            client.submit(_noop, i, key=f"seq-{i}", resources=resources).result()
        sequential = (time.monotonic() - t0) / 50 * 1000
        t0 = time.monotonic()
        client.gather([client.submit(_noop, i, key=f"bulk-{i}", resources=resources) for i in range(n)])
        bulk = (time.monotonic() - t0) / n * 1000
    return sequential, bulk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=8, help="declarations (default 8)")
    parser.add_argument("--work", type=float, default=2.0, help="seconds each build sleeps (default 2)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wheelproof-farm-bench-"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ["WHEELPROOF_ALLOW_LOOPBACK"] = "1"
    world = World(root, root / "declarations", root / "unused-store", root / "dist",
                  f"http://127.0.0.1:{httpd.server_address[1]}")
    world.declarations.mkdir()
    for i in range(args.n):
        world.declare_tiny(f"bench{i:03d}", hook=f"import time\ntime.sleep({args.work})\n")
    print(f"farm benchmark: {args.n} declarations, {args.work:g} s of work per build, {os.cpu_count()} CPUs")
    try:
        local = _doit(world, {}, root / "local" / "store")
        print(f"  local (no farm)        {local:6.1f} s")
        times = {}
        for workers in (1, 2):
            farm = start_farm(root / f"farm{workers}")
            try:
                for i in range(workers):
                    farm.start_worker(f"w{i + 1}")
                env = {"WHEELPROOF_FARM": farm.address, "WHEELPROOF_FARM_TRUSTED": ""}
                times[workers] = _doit(world, env, root / f"coord{workers}" / "store")
                print(f"  farm of {workers} worker(s)     {times[workers]:6.1f} s  (x{local / times[workers]:.2f})")
                if workers == 2:
                    per_node = _trivial(farm.address)
                    print(f"  trivial nodes          {per_node[0]:.1f} ms/node one at a time, {per_node[1]:.2f} "
                          f"ms/node 500 at once (Dask round trip, no wheelproof work)")
                    cached = _doit(world, env, root / "coord-cached" / "store")
                    print(f"  warm worker stores     {cached:6.1f} s  ({cached / args.n * 1000:.0f} ms per node "
                          f"end to end, doit start included; a node sent to the other worker is rebuilt)")
            finally:
                farm.stop()
        print(f"farm: {args.n} nodes: local {local:.1f} s, 1 worker {times[1]:.1f} s (x{local / times[1]:.2f}), "
              f"2 workers {times[2]:.1f} s (x{local / times[2]:.2f}); scheduler overhead {per_node[0]:.0f} ms/node")
    finally:
        httpd.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
