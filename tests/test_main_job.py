"""The README's main job, for real: `doit snapshot` (fresh store, downloads from the public index) over
a small fixture set (tests/fixtures/set: pytest and its closure over the 20 environments), then pip
installs pytest from the project's gateway. CI does not grow with the shipped set: the shipped set's
figures come from scripts (benchmarks/set_report.py), not from tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from pipeline.export.ipfs.gateway import GatewayServer
from pipeline.store.local import Store

from .conftest import REPO, needs_bwrap

pytestmark = [pytest.mark.integration, needs_bwrap]


FIXTURE_SET = REPO / "tests" / "fixtures" / "set"


def test_doit_snapshot_on_a_small_fixture_set(tmp_path):
    env = {**os.environ, "WHEELPROOF_STORE": str(tmp_path / "store"), "WHEELPROOF_DECLARATIONS": str(FIXTURE_SET)}
    result = subprocess.run([sys.executable, "-m", "doit", "-n", "2", "-f", str(REPO / "dodo.py"),
                             "--db-file", str(tmp_path / "doit.db"), "snapshot"],
                            env=env, capture_output=True, text=True, cwd=REPO, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "check: ok: 6 declarations" in result.stdout
    cid = re.search(r"snapshot: root CID (\S+)", result.stdout).group(1)
    # the CAR is not made by the snapshot: its line says how to make it, and `python -m pipeline car` does
    size = int(re.search(rf"  CAR      make with: python -m pipeline car {cid}  \(([\d,]+) bytes\)",
                         result.stdout).group(1).replace(",", ""))
    car_file = tmp_path / "store" / "cars" / f"{cid}.car"
    assert not car_file.exists()
    made = subprocess.run([sys.executable, "-m", "pipeline", "car"], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert made.returncode == 0 and f"  CAR      {car_file} ({size:,} bytes" in made.stdout, made.stderr
    server = GatewayServer(("127.0.0.1", 0), Store(tmp_path / "store"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        index = f"http://127.0.0.1:{server.server_address[1]}/ipfs/{cid}/simple/"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--isolated", "--no-cache-dir",
                        "--index-url", index, "pytest"], check=True, capture_output=True, env=clean)
        out = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "--version"], capture_output=True,
                             text=True)
        assert "pytest 9.2.0" in out.stdout + out.stderr
    finally:
        server.shutdown()
        server.server_close()
