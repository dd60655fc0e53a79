"""Hostile clients and a corrupt store against the gateway, over raw sockets.

Each attack is contained: a 400 with a message (never a traceback or a dropped connection), an
aborted connection (never error text inside a 200 body), an idle connection closed, an HTTP/1.0
keep-alive client served without hanging.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from pipeline.export.ipfs.gateway import DagReader, GatewayServer
from pipeline.export.ipfs.unixfs import V1_2025, Importer

from ..test_snapshot import tiny_snapshot

IDLE = 0.5


@pytest.fixture
def gateway(world):
    server = GatewayServer(("127.0.0.1", 0), world.store, max_concurrency=4, idle_timeout=IDLE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def connect(server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body (Content-Length bytes, or to EOF) and whether EOF came before the full body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed inside the headers: {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers["content-length"]) if "content-length" in headers else None
    short = False
    while length is None or len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            short = length is not None
            break
        body += chunk
    return status, headers, body, short


def request(path: str, version: str = "HTTP/1.1", **headers: str) -> bytes:
    lines = [f"GET {path} {version}", "Host: 127.0.0.1"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("segment", ["%ff", "%c3%28", "%e2%82", "tiny-app%80"])
def test_invalid_percent_encoding_is_a_400_not_a_traceback(world, gateway, segment):
    snap, _, _ = tiny_snapshot(world)
    with connect(gateway) as s:
        s.sendall(request(f"/ipfs/{snap.root}/simple/{segment}/"))
        status, _, body, _ = read_response(s)
        assert status == 400 and b"not valid percent-encoded UTF-8" in body
        s.sendall(request(f"/ipfs/{snap.root}/simple/"))  # the connection (and server) still work
        assert read_response(s)[0] == 200


def test_corrupt_block_mid_stream_aborts_the_connection(world, gateway):
    store = world.store
    data = os.urandom(3 * (1 << 20))
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree({"big.bin": data})
    node = DagReader(store).resolve(entry.cid, ["big.bin"])
    assert node.pb is not None and len(node.pb.links) >= 3
    leaf = store.object_path(node.pb.links[2].cid.hex_digest)  # found only after two good blocks went out
    leaf.chmod(0o644)
    leaf.write_bytes(b"evil" + leaf.read_bytes()[4:])
    with connect(gateway) as s:
        s.sendall(request(f"/ipfs/{entry.cid}/big.bin"))
        status, headers, body, short = read_response(s)
    assert status == 200 and int(headers["content-length"]) == len(data)
    assert short and len(body) < len(data), "the client must see the body end early"
    assert data.startswith(body), "only verified bytes went out"
    assert b"500" not in body[-200:] and b"corrupt" not in body


def test_idle_connections_time_out(world, gateway):
    snap, _, _ = tiny_snapshot(world)
    with connect(gateway) as silent:  # connects, never sends
        start = time.monotonic()
        assert closed_within(silent, 5), "an idle connection was kept open"
        assert time.monotonic() - start < 4
    with connect(gateway) as slow:  # half a request line, then nothing
        slow.sendall(b"GET /ipfs/")
        assert closed_within(slow, 5)
    with connect(gateway) as kept:  # one request on a persistent connection, then idle
        kept.sendall(request(f"/ipfs/{snap.root}/simple/"))
        assert read_response(kept)[0] == 200
        assert closed_within(kept, 5)


def test_http10_keep_alive_gets_a_persistent_connection(world, gateway):
    snap, decls, _ = tiny_snapshot(world)
    wheel = decls["tiny-app"].wheels[0]
    with connect(gateway) as s:
        for path in (f"/ipfs/{snap.root}/simple/tiny-app/", f"/ipfs/{snap.root}/simple/tiny-app/{wheel.filename}",
                     f"/ipfs/{snap.root}/no-such-file"):
            s.sendall(request(path, "HTTP/1.0", Connection="keep-alive"))
            status, headers, body, short = read_response(s)
            assert status in (200, 404) and not short
            assert headers["connection"].lower() == "keep-alive"
            assert int(headers["content-length"]) == len(body)
        assert status == 404
    with connect(gateway) as s:  # plain HTTP/1.0: one response, then the server closes
        s.sendall(request(f"/ipfs/{snap.root}/simple/", "HTTP/1.0"))
        status, headers, body, _ = read_response(s)
        assert status == 200 and headers["connection"].lower() == "close"
        assert closed_within(s, IDLE / 2)
    with connect(gateway) as s:  # HTTP/1.1 asking to close
        s.sendall(request(f"/ipfs/{snap.root}/simple/", Connection="close"))
        status, headers, _, _ = read_response(s)
        assert status == 200 and headers["connection"].lower() == "close"
        assert closed_within(s, IDLE / 2)
