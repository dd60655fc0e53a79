"""Snapshots and the gateway, end to end: tiny packages made here, served, installed by pip and uv."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.export.carmake import make_car
from pipeline.export.ipfs import car
from pipeline.export.ipfs.gateway import GatewayServer, negotiate
from pipeline.export.ipfs.multiformats import CID, CIDError
from pipeline.export.ipfs.unixfs import V1_2025, Importer, cid_of_tree
from pipeline.export.snapshot import SnapshotRefused, publish, walk
from pipeline.realise.fetch import fetch
from pipeline.store.local import Store
from pipeline.wheel.facts import facts_for
from tests.conftest import build_record

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def tiny_snapshot(world, verdicts: dict[str, str] | None = None, **extra_files: str):
    """Declare tiny-app (depends on tiny-lib[fast]) and tiny-lib; publish them as if rebuilt identically."""
    lib = world.declare_tiny("tiny-lib", "2.0", extras=["fast"],
                             files={"tiny_lib.py": "VALUE = 42\n", **extra_files})
    app = world.declare_tiny("tiny-app", "1.0", dependencies=["tiny-lib[fast]>=2"],
                             files={"tiny_app.py": "from tiny_lib import VALUE\nANSWER = VALUE\n"})
    decls = {"tiny-app": app, "tiny-lib": lib}
    store = world.store
    for d in decls.values():
        for w in d.wheels:
            fetch(store, w, what=str(d.path))
    verdicts = verdicts or {}
    records = {n: build_record("d" * 64, verdicts.get(n, "identical"), n, d.wheels[0].filename)
               for n, d in decls.items()}
    snap, published = publish(store, decls, records,
                              lambda d, w: facts_for(store, w.sha256, w.filename).metadata or b"",
                              log=lambda m: None)
    return snap, decls, published


@pytest.fixture
def gateway(world):
    server = GatewayServer(("127.0.0.1", 0), world.store, max_concurrency=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def get(server, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def test_snapshot_tree_is_deterministic_and_complete(world):
    snap, decls, published = tiny_snapshot(world)
    again = Importer(V1_2025, lambda c, b: None)
    assert len(published) == 2 and snap.blocks > 5
    assert not snap.car_path.exists()  # a snapshot records the CAR's plan; the bytes are made on demand
    made = make_car(world.store, snap.root, log=lambda m: None)
    assert (made.path, made.size, made.blocks) == (snap.car_path, snap.car_size, snap.blocks)
    roots, blocks = car.read(snap.car_path.read_bytes())
    blocks = list(blocks)
    assert roots == [snap.root]
    assert len({c for c, _ in blocks}) == len(blocks) == snap.blocks  # every block once
    # the same inputs give the same root, in another store
    other = Store(world.root / "other-store")
    for d in decls.values():
        for w in d.wheels:
            fetch(other, w, what="x")
    snap2, _ = publish(other, decls, {n: build_record("d" * 64, "identical", n, d.wheels[0].filename)
                                      for n, d in decls.items()},
                       lambda d, w: facts_for(other, w.sha256, w.filename).metadata or b"", log=lambda m: None)
    assert snap2.root == snap.root and snap2.car_plan == snap.car_plan  # the same plan document
    assert make_car(other, snap2.root, log=lambda m: None).sha256 == made.sha256
    assert again is not None


def test_publishing_policy_refuses_failed_and_unaccepted_differs(world):
    with pytest.raises(SnapshotRefused) as e:
        tiny_snapshot(world, verdicts={"tiny-app": "failed", "tiny-lib": "differs"})
    text = str(e.value)
    assert "tiny-app.toml: the build failed" in text and "accept-differs" in text


def test_unchanged_blocks_are_shared_between_snapshots(world):
    first, _, _ = tiny_snapshot(world)
    second, _, _ = tiny_snapshot(world, **{"extra.py": "X = 1\n"})  # one wheel changes
    assert second.root != first.root
    first_blocks = {c for c, _ in walk(world.store, first.root)}
    second_blocks = {c for c, _ in walk(world.store, second.root)}
    changed = second_blocks - first_blocks
    # the changed wheel (one raw block, fetched into the store before), its .metadata, its two index
    # pages, the directories above it (simple/tiny-lib, simple, root), wheelproof.json, index.html
    assert len(changed) <= 9, len(changed)
    assert second.new_blocks == len(changed) - 1  # all but the wheel, which the fetch stored
    assert len(first_blocks & second_blocks) >= len(second_blocks) - 9


def test_pep_503_691_658_pages(world, gateway):
    snap, decls, published = tiny_snapshot(world)
    base = f"/ipfs/{snap.root}/simple/"
    response, body = get(gateway, base + "tiny-lib/", {"Accept": "text/html"})
    page = body.decode()
    wheel = decls["tiny-lib"].wheels[0]
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert f'href="{wheel.filename}#sha256={wheel.sha256}"' in page
    assert 'data-requires-python="&gt;=3.8"' in page
    meta = facts_for(world.store, wheel.sha256, wheel.filename).metadata
    meta_sha = hashlib.sha256(meta).hexdigest()
    assert f'data-dist-info-metadata="sha256={meta_sha}"' in page and f'data-core-metadata="sha256={meta_sha}"' in page
    response, body = get(gateway, base + "tiny-lib/", {"Accept": PIP_ACCEPT})
    assert response.getheader("Content-Type") == "application/vnd.pypi.simple.v1+json"
    assert response.getheader("Vary") == "Accept"
    doc = json.loads(body)
    assert doc["meta"]["api-version"] == "1.1" and doc["versions"] == ["2.0"]
    assert doc["files"][0]["core-metadata"] == {"sha256": meta_sha} and doc["files"][0]["requires-python"] == ">=3.8"
    # the offered extras, under a private key (PEP 700: leading underscore) that clients ignore
    assert doc["_wheelproof:extras"] == ["fast"]
    _, body = get(gateway, base + "tiny-app/", {"Accept": PIP_ACCEPT})
    assert json.loads(body)["_wheelproof:extras"] == []
    _, body = get(gateway, f"/ipfs/{snap.root}/wheelproof.json")
    extras = {w["project"]: w["extras"] for w in json.loads(body)["published"]}
    assert extras == {"tiny-app": [], "tiny-lib": ["fast"]}
    _, body = get(gateway, f"/ipfs/{snap.root}/", {"Accept": "text/html"})
    status = body.decode()
    assert "<th>extras offered</th>" in status
    assert re.search(r'<a href="simple/tiny-lib/">tiny-lib</a>.*<td>fast</td><td>&ndash;</td></tr>', status)
    response, body = get(gateway, base + f"tiny-lib/{wheel.filename}.metadata")
    assert body == meta
    response, body = get(gateway, base, {"Accept": PIP_ACCEPT})
    assert json.loads(body)["projects"] == [{"name": "tiny-app"}, {"name": "tiny-lib"}]
    response, _ = get(gateway, base, {"Accept": "application/xml"})
    assert response.status == 406


def test_negotiate():
    offered = ["text/html", "application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+json"]
    assert negotiate(PIP_ACCEPT, offered) == "application/vnd.pypi.simple.v1+json"
    assert negotiate("text/html,application/xhtml+xml,*/*;q=0.8", offered) == "text/html"
    assert negotiate(None, offered) == "text/html"
    assert negotiate("application/json", offered) is None


def test_path_gateway_behaviour(world, gateway):
    snap, decls, _ = tiny_snapshot(world)
    wheel = decls["tiny-app"].wheels[0]
    data = world.store.read_bytes(wheel.sha256)
    path = f"/ipfs/{snap.root}/simple/tiny-app/{wheel.filename}"
    response, body = get(gateway, f"/ipfs/{snap.root}/simple?x=1")
    assert response.status == 301 and response.getheader("Location") == f"/ipfs/{snap.root}/simple/?x=1"
    response, body = get(gateway, path)
    assert response.status == 200 and body == data
    assert response.getheader("Cache-Control") == "public, max-age=29030400, immutable"
    etag = response.getheader("ETag")
    assert etag.startswith('"bafk')
    assert response.getheader("Content-Type") == "application/zip"
    response, body = get(gateway, path, {"If-None-Match": etag})
    assert response.status == 304 and body == b""
    response, body = get(gateway, path, method="HEAD")
    assert response.status == 200 and body == b"" and response.getheader("Content-Length") == str(len(data))
    response, body = get(gateway, path, {"Range": "bytes=10-19"})
    assert response.status == 206 and body == data[10:20]
    assert response.getheader("Content-Range") == f"bytes 10-19/{len(data)}"
    response, body = get(gateway, path, {"Range": "bytes=-5"})
    assert body == data[-5:]
    response, _ = get(gateway, path, {"Range": f"bytes={len(data)}-"})
    assert response.status == 416
    response, body = get(gateway, f"/ipfs/{snap.root}/")
    assert b"Wheelproof snapshot" in body and b"tiny-app" in body


def test_trustless_gateway_raw_and_car(world, gateway):
    snap, _, _ = tiny_snapshot(world)
    response, body = get(gateway, f"/ipfs/{snap.root}?format=raw")
    assert response.getheader("Content-Type") == "application/vnd.ipld.raw"
    assert hashlib.sha256(body).digest() == snap.root.digest
    response, body2 = get(gateway, f"/ipfs/{snap.root}", {"Accept": "application/vnd.ipld.raw"})
    assert body2 == body
    response, body = get(gateway, f"/ipfs/{snap.root}/simple/?format=car")
    assert response.getheader("Content-Type").startswith("application/vnd.ipld.car")
    roots, blocks = car.read(body)
    blocks = list(blocks)  # each verified against its CID
    # trustless gateway spec: the pathing blocks (root first) come before the target's DAG
    assert blocks[0][0] == snap.root and blocks[1][0] == roots[0] and roots[0] != snap.root
    response, body3 = get(gateway, f"/ipfs/{snap.root}/simple/", {"Accept": "application/vnd.ipld.car"})
    assert body3 == body


def test_the_made_car_is_the_gateways_whole_dag_car(world, gateway):
    """The CAR made on demand is byte for byte the gateway's ``/ipfs/<root>?format=car`` (dfs, dups=n)."""
    snap, _, _ = tiny_snapshot(world)
    response, body = get(gateway, f"/ipfs/{snap.root}?format=car")
    assert response.status == 200 and "order=dfs" in response.getheader("Content-Type")
    made = make_car(world.store, snap.root, log=lambda m: None)
    assert made.path.read_bytes() == body and len(body) == snap.car_size
    assert hashlib.sha256(body).hexdigest() == made.sha256


@pytest.mark.parametrize("cid,status", [
    ("xafybeib", 400),                                                    # bad multibase
    ("bafkqablimvwgy3y", 400),                                             # identity multihash (not the probe)
    ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzd", 400),  # truncated digest
    ("bafyreigdcg7pksx2zk5336vrfsktjodlr4rbfz37qr3koc5xboxe5ekv24", 400),  # dag-cbor codec
    ("bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y", 404),  # valid, not in the store
])
def test_bad_and_unknown_cids(world, gateway, cid, status):
    tiny_snapshot(world)
    response, body = get(gateway, f"/ipfs/{cid}/")
    assert response.status == status, body


def test_cid_parse_errors():
    for bad, message in [("", "empty"), ("Qm123", "multibase"), ("bAFY", "lower case"), ("b!!!!", "base32")]:
        with pytest.raises(CIDError, match=message):
            CID.parse(bad)


@pytest.mark.parametrize("path,status", [
    ("simple/../wheelproof.json", 400), ("simple/%2e%2e/index.html", 400), ("simple/a%5Cb", 400),
    ("simple/no-such-project/", 404), ("index.html/inside", 404),
])
def test_traversal_and_missing_paths(world, gateway, path, status):
    snap, _, _ = tiny_snapshot(world)
    response, _ = get(gateway, f"/ipfs/{snap.root}/{path}")
    assert response.status == status


def test_corrupt_block_is_detected_and_not_served(world, gateway):
    snap, decls, _ = tiny_snapshot(world)
    wheel = decls["tiny-app"].wheels[0]
    obj = world.store.object_path(wheel.sha256)  # a small wheel is its own raw leaf block
    obj.chmod(0o644)
    obj.write_bytes(b"evil" + obj.read_bytes()[4:])
    response, body = get(gateway, f"/ipfs/{snap.root}/simple/tiny-app/{wheel.filename}")
    assert response.status == 500 and b"corrupt" in body and b"evil" not in body


def test_hamt_directories_are_served(world, gateway):
    store = world.store
    tree = {f"f{i:05d}": f"{i}\n".encode() for i in range(6000)}
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree({"big": tree, "small": {"a": b"a"}})
    response, body = get(gateway, f"/ipfs/{entry.cid}/big/f04321")
    assert response.status == 200 and body == b"4321\n"
    response, _ = get(gateway, f"/ipfs/{entry.cid}/big/f99999")
    assert response.status == 404
    response, body = get(gateway, f"/ipfs/{entry.cid}/big/")
    assert body.count(b"<a href=") == 6000


def test_multi_block_file_ranges(world, gateway):
    store = world.store
    data = os.urandom(3 * (1 << 20) + 12345)
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree({"big.bin": data})
    response, body = get(gateway, f"/ipfs/{entry.cid}/big.bin")
    assert body == data
    response, body = get(gateway, f"/ipfs/{entry.cid}/big.bin", {"Range": f"bytes={(1 << 20) - 3}-{(2 << 20) + 3}"})
    assert body == data[(1 << 20) - 3:(2 << 20) + 4]


# -- real installers against the gateway ------------------------------------------------------

def _fresh_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp / "uv-cache"),
               PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.integration
def test_pip_and_uv_install_from_the_gateway(world, gateway, tmp_path):
    snap, decls, _ = tiny_snapshot(world)
    index = f"http://127.0.0.1:{gateway.server_address[1]}/ipfs/{snap.root}/simple/"
    env = _fresh_env(tmp_path)
    pip_venv = tmp_path / "pip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(pip_venv)], check=True)
    py = str(pip_venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--isolated", "--index-url", index, "tiny-app"], check=True,
                   env=env, capture_output=True)
    out = subprocess.run([py, "-c", "import tiny_app; print(tiny_app.ANSWER)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is a test dependency"
    uv_venv = tmp_path / "uv-venv"
    subprocess.run([uv, "venv", "-q", str(uv_venv)], check=True, env=env)
    subprocess.run([uv, "pip", "install", "--python", str(uv_venv / "bin" / "python"), "--index-url", index,
                    "tiny-app"], check=True, env=env, capture_output=True)
    out = subprocess.run([str(uv_venv / "bin" / "python"), "-c", "import tiny_lib; print(tiny_lib.VALUE)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    dest = tmp_path / "downloads"
    subprocess.run([py, "-m", "pip", "download", "--isolated", "--no-deps", "--index-url", index, "-d", str(dest),
                    "tiny-lib"], check=True, env=env, capture_output=True)
    (downloaded,) = dest.iterdir()
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == decls["tiny-lib"].wheels[0].sha256


# -- a real IPFS implementation computes the same root -------------------------------------------

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def js_importer():
    if not (JS / "node_modules" / "ipfs-unixfs-importer").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True)
    return JS / "import.mjs"


def _write_tree(root: Path, tree: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            _write_tree(root / name, value)
        else:
            (root / name).write_bytes(value)


@pytest.mark.integration
def test_root_cid_matches_ipfs_unixfs_importer(tmp_path, js_importer):
    tree = {
        "simple": {"index.html": b"<html>index</html>\n", "pkg": {"pkg-1.0-py3-none-any.whl": os.urandom(2_500_000)}},
        "sharded": {f"project-{i:05d}.html": f"page {i}\n".encode() for i in range(4000)},
        "empty": {},
        "unicode-é.txt": "ünïcödé\n".encode(),
    }
    _write_tree(tmp_path / "snap", tree)
    for profile in ("unixfs-v1-2025", "unixfs-v0-2015"):
        expected = subprocess.run(["node", str(js_importer), str(tmp_path / "snap"), profile], check=True,
                                  capture_output=True, text=True).stdout.strip()
        from pipeline.export.ipfs.unixfs import PROFILES
        assert str(cid_of_tree(tree, PROFILES[profile])) == expected, profile
