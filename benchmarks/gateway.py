"""Our gateway against nginx serving the same tree unpacked, in one run (the machine is shared: only
ratios measured side by side mean anything).

Makes six wheels (2 MiB of incompressible data each) and an 8 MiB one, a PEP 503 index of them, imports
the tree into a fresh store (UnixFS, as a snapshot) and unpacks the same files under nginx's root at the
same paths (``/ipfs/<root CID>/…``). Then, for each server: ``wrk`` keep-alive requests per second on a
small index page, ``wrk`` throughput on the 8 MiB wheel, and the wall time of ``pip install`` of the six
projects (median of 3). nginx (Debian ``nginx-light``) runs one worker process, like our one-process
gateway. Run: ``.venv/bin/python benchmarks/gateway.py`` (nginx and wrk come from ``make setup``).
"""

from __future__ import annotations

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


def pip_time(index: str, work: Path) -> float:
    times = []
    for i in range(3):
        target = work / f"pip-{time.monotonic_ns()}-{i}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "-q", "--no-deps",
                        "--target", str(target), "--index-url", index, *PROJECTS], check=True)
        times.append(time.perf_counter() - start)
        shutil.rmtree(target)
    return statistics.median(times)


def main() -> None:
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
            rows = {}
            for label, port in (("nginx", nport), ("wheelproof", gport)):
                base = f"http://127.0.0.1:{port}/ipfs/{root}/simple"
                page_rps, _ = wrk(f"{base}/bench-pkg0/", 16)
                _, wheel_bps = wrk(f"{base}/bench-big/bench_big-1.0-py3-none-any.whl", 4)
                rows[label] = (page_rps, wheel_bps, pip_time(f"{base}/", work))
            n, w = rows["nginx"], rows["wheelproof"]
            print(f"{'':12}{'small page req/s':>18}{'8 MiB wheel MB/s':>18}{'pip install (s)':>17}")
            for label, (rps, bps, pip) in rows.items():
                print(f"{label:12}{rps:18,.0f}{bps / 1e6:18,.0f}{pip:17.2f}")
            print(f"{'ratio':12}{w[0] / n[0]:17.2f}x{w[1] / n[1]:17.2f}x{w[2] / n[2]:16.2f}x"
                  "   (targets: >= 0.5x, >= 0.8x, <= 1.05x)")
        finally:
            for p in (ours, nginx):
                p.terminate()
                p.wait(10)


if __name__ == "__main__":
    main()
