"""Our gateway's CARs checked by independent IPFS implementations from npm (issue 15, item 1):
``@ipld/car`` reads the CAR and every block is hashed against its CID, ``ipfs-unixfs-exporter``
resolves the requested path from the CAR's root using only the CAR's blocks.

TG = https://specs.ipfs.tech/http-gateways/trustless-gateway/: a CAR for a content path carries the
blocks from the root to the target (so a client can verify the path), ``dag-scope=entity`` the
target entity, and ``entity-bytes=from:to`` only the blocks needed for that byte range.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.export.ipfs.unixfs import V1_2025, Importer
from tests.gatewayservers import KINDS, running
from tests.test_gateway_conformance import get
from tests.test_snapshot import tiny_snapshot

JS = Path(__file__).resolve().parent / "js"
BIG = os.urandom(3 * (1 << 20) + 4321)


@pytest.fixture(scope="session")
def verify_car():
    if not (JS / "node_modules" / "ipfs-unixfs-exporter").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True)
    return JS / "verify-car.mjs"


def node_verify(script: Path, car_file: Path, root: object, path: str, *extra: str) -> dict:
    out = subprocess.run(["node", str(script), str(car_file), str(root), path, *extra], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_npm_verifies_path_and_entity_bytes_cars(world, verify_car, tmp_path, kind):
    snap, _, published = tiny_snapshot(world)
    store = world.store
    big_root = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree({"data": {"big.bin": BIG}}).cid
    wheel = next(w for w in published if w.project == "tiny-lib").wheel
    with running(kind, store) as port:
        # a path CAR: root → simple → tiny-lib, then the directory's DAG (TG "CAR responses")
        response, body = get(port, f"/ipfs/{snap.root}/simple/tiny-lib/?format=car")
        assert response.status == 200
        (tmp_path / "dir.car").write_bytes(body)
        got = node_verify(verify_car, tmp_path / "dir.car", snap.root, "simple/tiny-lib")
        assert got["root"] == got["cid"] and got["type"] == "directory"
        assert got["size"] == 4  # index.html, index.json, the wheel, its .metadata
        # a wheel inside the snapshot, whole: the exporter's bytes are the wheel's
        response, body = get(port, f"/ipfs/{snap.root}/simple/tiny-lib/{wheel.filename}?format=car"
                                   "&dag-scope=entity")
        (tmp_path / "wheel.car").write_bytes(body)
        got = node_verify(verify_car, tmp_path / "wheel.car", snap.root, f"simple/tiny-lib/{wheel.filename}")
        assert (got["sha256"], got["size"]) == (wheel.sha256, wheel.size)
        # entity-bytes of a multi-block file: the range verifies from the CAR's blocks alone
        lo, hi = (1 << 20) + 100, 2 * (1 << 20) + 50  # spans the second and third leaves
        response, body = get(port, f"/ipfs/{big_root}/data/big.bin?format=car&dag-scope=entity"
                                   f"&entity-bytes={lo}:{hi}")
        assert response.status == 200
        (tmp_path / "range.car").write_bytes(body)
        got = node_verify(verify_car, tmp_path / "range.car", big_root, "data/big.bin", str(lo), str(hi - lo + 1))
        assert got["sha256"] == hashlib.sha256(BIG[lo:hi + 1]).hexdigest()
        assert got["blocks"] < 2 + 4  # root, data, the file node and its two leaves, never all four
        # and a range the CAR does not carry cannot be read from it
        out = subprocess.run(["node", str(verify_car), str(tmp_path / "range.car"), str(big_root), "data/big.bin",
                              "0", "10"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0


@pytest.mark.integration
def test_npm_verifies_the_made_car(world, verify_car):
    """The CAR `python -m pipeline car` makes (pipeline/export/carmake.py): @ipld/car reads every block
    and hashes it against its CID, ipfs-unixfs-exporter lists the root from the CAR's blocks alone."""
    from pipeline.export.carmake import make_car

    snap, _, _ = tiny_snapshot(world)
    made = make_car(world.store, snap.root, log=lambda m: None)
    got = node_verify(verify_car, made.path, snap.root, "")
    assert (got["root"], got["cid"], got["type"], got["blocks"]) == (str(snap.root), str(snap.root), "directory",
                                                                     snap.blocks)
    assert got["size"] == 3  # index.html, simple/, wheelproof.json
