"""Our gateway against nginx serving the same tree unpacked, in one run (the machine is shared: only
ratios measured side by side mean anything).

Makes six wheels (2 MiB of incompressible data each) and an 8 MiB one, a PEP 503 index of them, imports
the tree into a fresh store (UnixFS, as a snapshot) and unpacks the same files under nginx's root at the
same paths (``/ipfs/<root CID>/…``). Both servers run side by side; after one discarded warm-up
``pip install`` from each (our gateway hashes each block once per process, nginx reads its page
cache), each round measures, for both servers back to back (which goes first alternates): ``wrk``
keep-alive requests per second on a small index page, ``wrk`` throughput on the 8 MiB wheel, and the
wall time of ``pip install`` of the six projects (3 runs alternating between the servers, median of
each). Every round is printed; the summary is the median over rounds of each figure and of each
round's ratio (the machine is shared, so only figures measured close together are compared). nginx
(Debian ``nginx-light``) runs one worker process, like our one-process gateway. Run:
``.venv/bin/python benchmarks/gateway.py [--rounds N]`` (nginx and wrk come from ``make setup``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _common import REPO

from pipeline.export.ipfs.unixfs import V1_2025, Importer
from pipeline.store.local import Store

PROJECTS = [f"bench-pkg{i}" for i in range(6)]
SECONDS = 5


def wheel(name: str, size: int) -> tuple[str, bytes]:
    mod = name.replace("-", "_")
    filename = f"{mod}-1.0-py3-none-any.whl"
    files = {f"{mod}/__init__.py": b"", f"{mod}/data.bin": os.urandom(size),
             f"{mod}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{mod}-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},,\n" for p in files) + f"{mod}-1.0.dist-info/RECORD,,\n"
    files[f"{mod}-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p, data in files.items():
            z.writestr(zipfile.ZipInfo(p, (2020, 1, 1, 0, 0, 0)), data)
    return filename, buf.getvalue()


def make_tree() -> dict:
    simple: dict = {}
    for name in [*PROJECTS, "bench-big"]:
        filename, data = wheel(name, 8 << 20 if name == "bench-big" else 2 << 20)
        link = f'<a href="{filename}#sha256={hashlib.sha256(data).hexdigest()}">{filename}</a><br>'
        simple[name] = {"index.html": f"<!DOCTYPE html><html><body>{link}</body></html>\n".encode(), filename: data}
    simple["index.html"] = ("<!DOCTYPE html><html><body>" + "".join(f'<a href="{p}/">{p}</a><br>' for p in simple)
                            + "</body></html>\n").encode()
    return {"simple": simple}


def unpack(tree: dict, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            unpack(value, dest / name)
        else:
            (dest / name).write_bytes(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def wrk(url: str, connections: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", url], capture_output=True,
                         text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]
    if re.search(r"Non-2xx", out):
        raise SystemExit(f"wrk saw errors from {url}:\n{out}")
    return rps, float(value) * scale


def pip_once(index: str, work: Path) -> float:
    target = work / f"pip-{time.monotonic_ns()}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "-q", "--no-deps",
                    "--target", str(target), "--index-url", index, *PROJECTS], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def pip_times(indexes: dict[str, str], work: Path, runs: int = 3) -> dict[str, float]:
    """Median wall time of ``runs`` installs per index, the indexes taking turns."""
    times: dict[str, list[float]] = {label: [] for label in indexes}
    for _ in range(runs):
        for label, index in indexes.items():
            times[label].append(pip_once(index, work))
    return {label: statistics.median(t) for label, t in times.items()}


def table(rows: dict[str, tuple[float, float, float]], ratio: tuple[float, float, float]) -> str:
    lines = [f"{'':12}{'small page req/s':>18}{'8 MiB wheel MB/s':>18}{'pip install (s)':>17}"]
    lines += [f"{label:12}{rps:18,.0f}{bps / 1e6:18,.0f}{pip:17.2f}" for label, (rps, bps, pip) in rows.items()]
    lines.append(f"{'ratio':12}{ratio[0]:17.2f}x{ratio[1]:17.2f}x{ratio[2]:16.2f}x"
                 "   (targets: >= 0.5x, >= 0.8x, <= 1.05x)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both servers side by side (default 3)")
    rounds = parser.parse_args().rounds
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run `make setup` (the Makefile's SYSTEM_TOOLS installs it)")
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx workers (user nobody when started as root) read www/
        store = Store(work / "store")
        tree = make_tree()
        root = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree(tree).cid
        unpack(tree, work / "www" / "ipfs" / str(root))
        nport, gport = free_port(), free_port()
        conf = work / "nginx.conf"
        conf.write_text(f"""worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
  types {{ text/html html; application/zip whl; }} default_type application/octet-stream;
  server {{ listen 127.0.0.1:{nport}; root {work}/www; index index.html; }} }}
""")
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])
        env = {**os.environ, "WHEELPROOF_STORE": str(store.root)}
        ours = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(gport)], env=env,
                                cwd=REPO, stdout=subprocess.DEVNULL)
        try:
            wait(nport)
            wait(gport)
            bases = {"nginx": f"http://127.0.0.1:{nport}/ipfs/{root}/simple",
                     "wheelproof": f"http://127.0.0.1:{gport}/ipfs/{root}/simple"}
            pip_times({label: f"{base}/" for label, base in bases.items()}, work, runs=1)  # warm-up, discarded
            measured: list[dict[str, tuple[float, float, float]]] = []
            for r in range(rounds):
                order = list(bases) if r % 2 == 0 else list(reversed(bases))
                figures: dict[str, tuple[float, float]] = {}
                for label in order:
                    page_rps, _ = wrk(f"{bases[label]}/bench-pkg0/", 16)
                    _, wheel_bps = wrk(f"{bases[label]}/bench-big/bench_big-1.0-py3-none-any.whl", 4)
                    figures[label] = (page_rps, wheel_bps)
                pips = pip_times({label: f"{bases[label]}/" for label in order}, work)
                rows = {label: (*figures[label], pips[label]) for label in bases}
                measured.append(rows)
                print(f"round {r + 1} of {rounds} ({' first, '.join(order)} second):")
                print(table(rows, ratios(rows)), flush=True)
            medians = {label: median3([m[label] for m in measured]) for label in bases}
            print(f"median of {rounds} rounds (ratio: the median of the rounds' ratios):")
            print(table(medians, median3([ratios(m) for m in measured])))
        finally:
            for p in (ours, nginx):
                p.terminate()
                p.wait(10)


def median3(values: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    a, b, c = (statistics.median(v[i] for v in values) for i in range(3))
    return a, b, c


def ratios(rows: dict[str, tuple[float, float, float]]) -> tuple[float, float, float]:
    n, w = rows["nginx"], rows["wheelproof"]
    return w[0] / n[0], w[1] / n[1], w[2] / n[2]


if __name__ == "__main__":
    main()
