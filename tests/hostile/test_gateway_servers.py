"""Hostile clients against both gateway servers (the threaded one and the asyncio one `doit serve` runs).

Every attack ends in a 4xx answer or a closed connection, never a 5xx, a traceback or a hang, and the
server goes on answering the next client.
"""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.export.ipfs.unixfs import V1_2025, Importer
from pipeline.store.local import Store

from ..gatewayservers import KINDS, running

IDLE = 0.5


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("hostile-gw") / "store")
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree(
        {"index.html": b"<p>root</p>", "docs": {"a.txt": b"hello\n"}, "big.bin": b"x" * (300 * 1024)})
    return store, entry.cid


@pytest.fixture(params=KINDS)
def gw(request, tree):
    store, root = tree
    with running(request.param, store, idle_timeout=IDLE) as port:
        yield port, root


def exchange(port: int, raw: bytes, wait: float = 10.0) -> bytes:
    """Send ``raw`` and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(raw)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass  # quiet, or closed on us: what was answered is what counts
        return b"".join(chunks)


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def still_serving(port: int, root) -> None:
    answer = exchange(port, f"GET /ipfs/{root}/docs/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status(answer) == 200 and answer.endswith(b"hello\n")


def get(port: int, target: str, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n{head}Connection: close\r\n\r\n".encode())


@pytest.mark.parametrize("target", ["/ipfs/{root}/%ff", "/ipfs/{root}/%c3%28",
                                    "/ipfs/{root}?dag-scope=everything&format=car",
                                    "/ipfs/{root}/big.bin?format=car&entity-bytes=0:999999999999999999999999",
                                    "/ipfs/{root}/big.bin?format=car&entity-bytes=junk"])
def test_malformed_targets_are_a_400(gw, target):
    port, root = gw
    answer = get(port, target.format(root=root))
    assert status(answer) == 400
    assert b"Traceback" not in answer
    still_serving(port, root)


@pytest.mark.parametrize("target", ["/ipfs/{root}/../../etc/passwd", "/ipfs/{root}/docs/%2e%2e/%2e%2e/etc/passwd",
                                    "/ipfs/../store/lock", "/ipfs/{root}/docs/..%2f..%2fsecret",
                                    "/ipfs/{root}/%zz", "/ipfs/{root}/docs/%"])
def test_traversal_never_leaves_the_dag(gw, target):
    """``..`` in any spelling, and stray ``%`` (taken literally, as URL parsers do): a 4xx, nothing read
    outside the snapshot."""
    port, root = gw
    answer = get(port, target.format(root=root))
    assert 400 <= status(answer) < 500
    assert b"root:" not in answer
    still_serving(port, root)


@pytest.mark.parametrize("value", ["bytes=abc", "bytes=5-1", "bytes=-", "bytes=99999999999-", "lines=0-1",
                                   "bytes=" + ",".join(f"{i}-{i}" for i in range(500))])
def test_malformed_range_is_answered_not_crashed(gw, value):
    port, root = gw
    answer = get(port, f"/ipfs/{root}/big.bin", f"Range: {value}")
    assert status(answer) in (200, 206, 400, 416)
    assert b"Traceback" not in answer
    still_serving(port, root)


def test_an_if_none_match_flood_is_refused(gw):
    port, root = gw
    tags = ", ".join(f'"tag{i}"' for i in range(1000))
    answer = get(port, f"/ipfs/{root}/docs/a.txt", f"If-None-Match: {tags}")
    assert status(answer) == 400
    still_serving(port, root)


def test_an_oversized_request_line_or_header_is_refused(gw):
    port, root = gw
    for raw in (f"GET /ipfs/{root}/{'a' * 200_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                f"GET /ipfs/{root}/ HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 200_000}\r\n\r\n".encode()):
        answer = exchange(port, raw)
        assert answer == b"" or 400 <= status(answer) < 500  # refused, or the connection closed
    still_serving(port, root)


def test_a_slowloris_client_is_cut_off_after_the_idle_timeout(gw):
    port, root = gw
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /ipfs/")  # and never the rest
        started = time.monotonic()
        rest = s.recv(65536)  # the server closes (b"") or answers a 4xx: it does not wait for ever
        assert rest == b"" or 400 <= status(rest) < 500
        assert time.monotonic() - started < 8
    still_serving(port, root)


def test_pipelined_requests_get_their_answers_in_order(gw):
    port, root = gw
    one = f"GET /ipfs/{root}/docs/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    two = f"GET /ipfs/{root}/index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(port, (one + two).encode())
    assert answer.count(b"HTTP/1.1 200") == 2
    assert answer.index(b"hello\n") < answer.index(b"<p>root</p>")
