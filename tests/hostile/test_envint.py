"""Hostile inputs to the client: lying gateways, lying RECORDs, a CID that is not the release's."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.client.proxy import ProxyServer
from pipeline.client.source import load_release
from pipeline.export.carmake import make_car
from pipeline.export.ipfs.multiformats import CID
from pipeline.trust.release import Releases
from pipeline.trust.signing import write_keypair

from ..test_envint import env_snapshot, pip_install, venv, verify
from ..test_snapshot import _fresh_env, gateway  # noqa: F401  (fixture)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _release(world, rel, key, **lib_files):
    snap, _, published = env_snapshot(world, **lib_files)
    make_car(world.store, snap.root, log=lambda m: None)
    wheels = [{"project": w.project, "version": w.version, "filename": w.wheel.filename, "sha256": w.wheel.sha256,
               "verdict": w.verdict, "tests": None} for w in published]
    path, _ = rel.publish(key, snap.root, snap.car_path, wheels, {}, None, NOW, refuse_inside=[world.store_root],
                          state=world.root / "publisher.checkpoint")
    return snap, path


@pytest.fixture
def releases(world, tmp_path):
    key = write_keypair(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub")
    rel = Releases(world.root / "releases")
    old_snap, old = _release(world, rel, key)
    new_snap, new = _release(world, rel, key, **{"extra.py": "X = 1\n"})
    return {"key": tmp_path / "keys" / "release.pub", "old": old, "new": new, "old_root": old_snap.root,
            "new_root": new_snap.root}


class Liar(ThreadingHTTPServer):
    """Forwards to an honest gateway, then lies: 'alter' flips a byte of every block, 'substitute' answers
    every block with another block's bytes, 'stale' answers the new release's root with the old one's."""

    daemon_threads = True

    def __init__(self, honest_port: int, mode: str, other: CID, new_root: CID | None = None):
        self.honest_port, self.mode, self.other, self.new_root = honest_port, mode, other, new_root
        self.lies = 0
        super().__init__(("127.0.0.1", 0), LiarHandler)


class LiarHandler(BaseHTTPRequestHandler):
    server: Liar

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        cid = urllib.parse.urlsplit(path).path.split("/")[2]
        s = self.server
        if s.mode == "substitute" or (s.mode == "stale" and CID.parse(cid).digest == s.new_root.digest):
            path, s.lies = f"/ipfs/{s.other}?format=raw", s.lies + 1
        conn = http.client.HTTPConnection("127.0.0.1", s.honest_port, timeout=30)
        conn.request("GET", path, headers={"Accept": "application/vnd.ipld.raw"})
        response = conn.getresponse()
        body = response.read()
        if s.mode == "alter" and response.status == 200:
            body, s.lies = bytes([body[0] ^ 1]) + body[1:], s.lies + 1
        self.send_response(response.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("mode,message", [
    ("alter", "altered or substituted content"),
    ("substitute", "altered or substituted content"),
    ("stale", "stale content: it is release 1's root"),
])
@pytest.mark.integration
def test_lying_gateway_is_caught_by_the_proxy(world, gateway, releases, tmp_path, mode, message):  # noqa: F811
    other = releases["old_root"]
    if mode == "substitute":  # another CID's content, one the gateway really has
        other = CID(1, 0x55, bytes.fromhex(world.store.put_bytes(b"VALUE = 666\n")))
    liar = _serve(Liar(gateway.server_address[1], mode, other, releases["new_root"]))
    proxy = _serve(ProxyServer(("127.0.0.1", 0), f"http://127.0.0.1:{liar.server_address[1]}",
                               load_release(releases["new"], releases["key"])))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=30)
        conn.request("GET", "/simple/tiny-app/")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 502 and message in body and liar.lies
        py = venv(tmp_path / "v")
        with pytest.raises(subprocess.CalledProcessError):
            pip_install(tmp_path, py, f"http://127.0.0.1:{proxy.server_address[1]}/simple/", "tiny-app")
        assert not list((tmp_path / "v" / "lib").rglob("tiny_app*"))  # nothing installed
        # verify-env through the same liar refuses too (exit 1, the reason on stderr)
        out = world.cli("verify-env", str(py), "--snapshot", str(releases["new"]), "--trusted-key",
                        str(releases["key"]), "--gateway", f"http://127.0.0.1:{liar.server_address[1]}")
        assert out.returncode == 1 and message in out.stderr
    finally:
        for s in (proxy, liar):
            s.shutdown()
            s.server_close()


@pytest.mark.integration
def test_honest_gateway_through_the_proxy_installs_and_verifies(world, gateway, releases, tmp_path):  # noqa: F811
    proxy = _serve(ProxyServer(("127.0.0.1", 0), f"http://127.0.0.1:{gateway.server_address[1]}",
                               load_release(releases["new"], releases["key"])))
    try:
        py = venv(tmp_path / "v")
        pip_install(tmp_path, py, f"http://127.0.0.1:{proxy.server_address[1]}/simple/", "tiny-app")
        out = world.cli("verify-env", str(py), "--snapshot", str(releases["new"]), "--trusted-key",
                        str(releases["key"]), "--gateway", f"http://127.0.0.1:{gateway.server_address[1]}")
        assert out.returncode == 0, out.stdout + out.stderr
        # another CID than the release's root is refused by the proxy
        conn = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=30)
        conn.request("GET", f"/ipfs/{releases['old_root']}/simple/")
        response = conn.getresponse()
        assert response.status == 403 and b"is not the root of release 2" in response.read()
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_snapshot_cid_that_is_not_the_releases_is_refused(world, releases):
    out = world.cli("verify-env", sys.executable, "--snapshot", str(releases["old_root"]), "--release",
                    str(releases["new"]), "--trusted-key", str(releases["key"]))
    assert out.returncode == 1
    assert f"--snapshot {releases['old_root']} is not the root of release 2" in out.stderr


def test_release_signed_by_another_key_is_refused(world, releases, tmp_path):
    other = write_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    assert other
    out = world.cli("verify-env", sys.executable, "--snapshot", str(releases["new"]), "--trusted-key",
                    str(tmp_path / "other.pub"))
    assert out.returncode == 1 and "does not verify under" in out.stderr
    out = world.cli("verify-env", sys.executable, "--snapshot", str(releases["new"]))
    assert out.returncode == 1 and "only accepted with --trusted-key" in out.stderr


@pytest.mark.integration
def test_a_record_that_lies_is_reported_and_nothing_is_written(world, gateway, tmp_path):  # noqa: F811
    snap, _, _ = env_snapshot(world)
    py = venv(tmp_path / "v")
    pip_install(tmp_path, py, f"http://127.0.0.1:{gateway.server_address[1]}/ipfs/{snap.root}/simple/", "tiny-lib")
    record = next((tmp_path / "v").rglob("tiny_lib-2.0.dist-info/RECORD"))
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines + ["../../../../../../../../etc/passwd,,", "/etc/shadow,,",
                                         "x.py,sha256=,notanumber"]) + "\n")

    def tree():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    before = tree()
    out = verify(world, py, snap)
    assert out.returncode == 1
    n = len(lines)
    assert f"RECORD:{n + 1}: path '../../../../../../../../etc/passwd' leaves the environment" in out.stdout
    assert f"RECORD:{n + 2}: absolute path '/etc/shadow'" in out.stdout
    assert f"RECORD:{n + 3}: unparsable RECORD row" in out.stdout
    assert tree() == before
