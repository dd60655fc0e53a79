"""Remembered answers (pipeline.export.ipfs.answers) in the asyncio gateway `doit serve` runs.

An answer is found again only by the same method, target, framing and values of the headers
``respond`` reads; only immutable answers (RFC 8246; the path gateway's ``Cache-Control``) are kept.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Mapping

import pytest

from pipeline.export.ipfs.answers import AnswerCache, CachedAnswer
from pipeline.export.ipfs.blocks import VerifiedBlocks
from pipeline.export.ipfs.dag import DagReader
from pipeline.export.ipfs.multiformats import CID, RAW
from pipeline.export.ipfs.respond import REQUEST_HEADERS, respond
from pipeline.export.ipfs.unixfs import V1_2025, Importer
from pipeline.store.local import Store

from .gatewayservers import running

JSON = "application/vnd.pypi.simple.v1+json"
HELLO = CID.of(b"hello\n", RAW)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("answers") / "store")
    entry = Importer(V1_2025, lambda c, b: store.put_bytes(b)).tree(
        {"simple": {"pkg": {"index.html": b"<a>html</a>", "index.json": b'{"json": 1}'}},
         "docs": {"a.txt": b"hello\n"}, "big.bin": b"x" * (300 * 1024)})
    return store, entry.cid


@pytest.fixture
def served(tree):
    store, root = tree
    cache = AnswerCache()
    with running("async", store, cache=cache) as port:
        yield port, root, store, cache


class RecordingHeaders(Mapping[str, str]):
    """Request headers that remember which were looked at (iterating them counts as looking at all)."""

    def __init__(self, values: dict[str, str]):
        self.values, self.read = values, set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        self.read.add("*")
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_respond_reads_no_request_header_but_those_it_declares(tree):
    """The cache key is built from REQUEST_HEADERS: an answer depending on any other header would be
    served to a request that did not ask for it."""
    store, root = tree
    reader = DagReader(VerifiedBlocks(store))
    every = {"host": "x", "user-agent": "pip", "cookie": "c=1", "if-modified-since": "Sat, 01 Jan 2000 00:00:00 GMT",
             "if-range": '"x"', "x-forwarded-for": "10.0.0.1", "authorization": "Basic eA==", "origin": "http://a"}
    cases = [(f"/ipfs/{root}/simple/pkg/", {"accept": JSON}),
             (f"/ipfs/{root}/simple/pkg", {}),
             (f"/ipfs/{root}/docs/a.txt", {"range": "bytes=0-1"}),
             (f"/ipfs/{root}/docs/a.txt", {"if-none-match": "*"}),
             (f"/ipfs/{root}/docs/a.txt", {"accept": "application/vnd.ipld.raw"}),
             (f"/ipfs/{root}/docs/", {"accept": "application/vnd.ipld.car; version=1"}),
             (f"/ipfs/{root}/big.bin", {"service-worker": "script"}),
             (f"/ipfs/{root}/nothing-here", {}), ("/ipfs/bafkqaaa", {})]
    read: set[str] = set()
    for target, extra in cases:
        for method in ("GET", "HEAD"):
            headers = RecordingHeaders({**every, **extra})
            respond(reader, method, target, headers)
            read |= headers.read
    assert read == set(REQUEST_HEADERS)


def test_the_cache_is_bounded_in_entries_and_bytes_least_recently_used_first():
    cache = AnswerCache(max_bytes=10_000, max_entries=4)
    answer = CachedAnswer(b"x" * 100, b"y" * 100)
    for i in range(4):
        cache.put(("GET", f"/{i}"), answer)
    assert cache.get(("GET", "/0")) is answer  # now the most recently used
    cache.put(("GET", "/4"), answer)
    assert len(cache) == 4 and cache.get(("GET", "/1")) is None and cache.get(("GET", "/0")) is answer
    cache.put(("GET", "/huge"), CachedAnswer(b"", b"z" * 20_000))  # larger than the whole cache: not kept
    assert cache.get(("GET", "/huge")) is None and len(cache) == 4
    for i in range(3):
        cache.put(("GET", f"/big{i}"), CachedAnswer(b"", b"z" * 4_000))
    assert cache.held <= 10_000 and cache.get(("GET", "/big2")) is not None and cache.get(("GET", "/big0")) is None


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def request(port: int, target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    close = "" if any(h.lower().startswith("connection:") for h in headers) else "Connection: close\r\n"
    return exchange(port, f"{method} {target} HTTP/{version}\r\nHost: x\r\n{head}{close}\r\n".encode())


def undated(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", answer)


VARIANTS = [
    ("/simple/pkg/", (), 200, b"<a>html</a>"),
    ("/simple/pkg/", ("Accept: text/html",), 200, b"<a>html</a>"),
    ("/simple/pkg/", (f"Accept: {JSON}",), 200, b'{"json": 1}'),
    ("/simple/pkg/", ("Accept: image/png",), 406, None),
    ("/simple/pkg", (), 301, b""),
    ("/docs/a.txt", (), 200, b"hello\n"),
    ("/docs/a.txt", ("Range: bytes=1-2",), 206, b"el"),
    ("/docs/a.txt", ("Range: bytes=4-",), 206, b"o\n"),
    ("/docs/a.txt", (f'If-None-Match: W/"{HELLO}"',), 304, b""),
    ("/docs/a.txt", ('If-None-Match: "other"',), 200, b"hello\n"),
    ("/docs/a.txt", ("Accept: application/vnd.ipld.raw",), 200, b"hello\n"),
    ("/docs/a.txt", ("Service-Worker: script",), 400, None),
]


def test_variants_of_one_target_are_each_answered_as_themselves(served, rounds=2):
    """Every variant of a target (Accept, Range, If-None-Match, Service-Worker) is answered as itself,
    the first time and when remembered, whatever variant was remembered before it."""
    port, root, _, cache = served
    seen: dict[int, bytes] = {}
    for _ in range(rounds):
        for i, (target, headers, status, body) in enumerate(VARIANTS):
            answer = request(port, f"/ipfs/{root}{target}", *headers)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (target, headers, answer[:300])
            if body is not None:
                assert answer.endswith(b"\r\n\r\n" + body), (target, headers, answer[-300:])
            assert undated(seen.setdefault(i, answer)) == undated(answer)
    remembered = [v for v in VARIANTS if v[2] not in (400, 406)]  # errors say no-cache
    assert len(cache) == len(remembered) and cache.hits == len(remembered) * (rounds - 1)


def test_framing_is_part_of_the_request(served):
    """RFC 9112 §9.3: the same target over HTTP/1.0 with and without keep-alive, and HEAD, each as itself."""
    port, root, _, cache = served
    url = f"/ipfs/{root}/docs/a.txt"
    for _ in range(2):
        closing = request(port, url, version="1.0")
        head = request(port, url, method="HEAD")
        assert b"\r\nConnection: close\r\n" in closing and closing.endswith(b"hello\n")
        assert head.endswith(b"Content-Length: 6\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(2):  # HTTP/1.0 keep-alive: echoed, and the connection stays usable
            s.sendall(f"GET {url} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"hello\n"):
                answer += s.recv(65536)
            assert b"\r\nConnection: keep-alive\r\n" in answer and b"Connection: close" not in answer
    assert cache.hits == 3


def test_an_answer_that_may_change_is_not_remembered(served):
    """A 404 for a block the store does not have yet says no-cache: once the block arrives it is served."""
    port, _, store, cache = served
    data = b"arrives later\n"
    cid = CID.of(data, RAW)
    assert request(port, f"/ipfs/{cid}").startswith(b"HTTP/1.1 404 ")
    assert request(port, f"/ipfs/{cid}").startswith(b"HTTP/1.1 404 ")
    store.put_bytes(data)
    answer = request(port, f"/ipfs/{cid}")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(data)
    assert cache.hits == 0
    index = request(port, "/")
    assert b"Cache-Control: no-cache" in index and undated(request(port, "/")) == undated(index)
    assert cache.hits == 0
