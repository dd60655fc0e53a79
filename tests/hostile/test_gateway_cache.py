"""Hostile clients against what the asyncio gateway (`doit serve`) keeps per request and per connection.

A client cycling distinct targets or huge header values costs the answer cache its hits, never the
server its memory (pipeline.export.ipfs.answers: bounded in bytes, keys included, and in entries); a
request head trickled in a byte at a time is cut off after the idle timeout like a silent one.
"""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.export.ipfs.answers import AnswerCache
from pipeline.export.ipfs.unixfs import V1_2025, Importer
from pipeline.store.local import Store

from ..gatewayservers import running
from .test_gateway_servers import exchange, status, still_serving


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("hostile-cache") / "store")
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree(
        {"index.html": b"<p>root</p>", "docs": {"a.txt": b"hello\n"}})
    return store, entry.cid


def test_distinct_targets_and_huge_headers_do_not_grow_the_cache(tree):
    store, root = tree
    cache = AnswerCache(max_bytes=256 << 10, max_entries=100)
    with running("async", store, cache=cache) as port:
        requests = [f"GET /ipfs/{root}/docs/a.txt?n={i} HTTP/1.1\r\nHost: x\r\n\r\n" for i in range(1000)]
        requests += [f"GET /ipfs/{root}/docs/a.txt HTTP/1.1\r\nHost: x\r\nAccept: {i}{'a' * 30_000}\r\n\r\n"
                     for i in range(40)]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for i in range(0, len(requests), 10):  # pipelined, ten at a time
                s.sendall("".join(requests[i:i + 10]).encode())
                answers = b""
                while answers.count(b"hello\n") < len(requests[i:i + 10]):
                    chunk = s.recv(1 << 20)
                    assert chunk, "the server closed the connection"
                    answers += chunk
                assert answers.count(b"HTTP/1.1 200 OK") == len(requests[i:i + 10])
                assert len(cache) <= 100 and cache.held <= 256 << 10
        assert len(cache) > 0
        still_serving(port, root)


def test_a_request_head_trickled_byte_by_byte_is_cut_off(tree):
    store, root = tree
    with running("async", store, idle_timeout=1.0) as port:
        head = f"GET /ipfs/{root}/docs/a.txt HTTP/1.1\r\nHost: x\r\nX-Slow: {'s' * 200}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            started = time.monotonic()
            closed_at = None
            for byte in head:
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic()
                    break
                time.sleep(0.05)
                if time.monotonic() - started > 6:
                    break
            if closed_at is None:
                s.settimeout(5)
                rest = s.recv(65536)
                assert rest == b"" or 400 <= status(rest) < 500
                closed_at = time.monotonic()
        assert closed_at - started < 4  # 1 s to complete the head, not 1 s between bytes
        answer = exchange(port, f"GET /ipfs/{root}/docs/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          .encode())
        assert status(answer) == 200 and answer.endswith(b"hello\n")
