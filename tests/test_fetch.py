"""Fixed-output fetch against a local HTTP server: only matching bytes enter the store."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time

import pytest

from pipeline.model.declaration import Artifact
from pipeline.model.errors import FetchError
from pipeline.realise.fetch import fetch
from pipeline.store.local import Store

PAYLOAD = b"wheel bytes " * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/ok.whl":
            self._send(200, PAYLOAD)
        elif self.path == "/empty.whl":
            self._send(200, b"")
        elif self.path == "/truncated.whl":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:100])
            self.wfile.flush()
            self.connection.close()
        elif self.path == "/flaky.whl":
            self._send(503 if _Handler.hits[self.path] == 1 else 200, PAYLOAD)
        elif self.path == "/slow.whl":
            time.sleep(2)
            self._send(200, PAYLOAD)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass  # the fetch stopped reading a body longer than its pin


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


GOOD = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    monkeypatch.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")  # the server above is on 127.0.0.1


def _art(server: str, path: str, sha: str = GOOD, size: int | None = len(PAYLOAD)) -> Artifact:
    return Artifact("x-1.0-py3-none-any.whl", f"{server}{path}", sha, size)


def _fetch(store: Store, art: Artifact, **kw: object) -> str:
    return fetch(store, art, what="declarations/x/x.toml", backoff=0.01, **kw)  # type: ignore[arg-type]


def test_matching_download_enters_the_store_once(tmp_path, server, monkeypatch):
    store = Store(tmp_path)
    assert _fetch(store, _art(server, "/ok.whl")) == GOOD
    assert store.read_bytes(GOOD) == PAYLOAD
    monkeypatch.setenv("WHEELPROOF_OFFLINE", "1")
    before = _Handler.hits.get("/ok.whl")
    assert _fetch(store, _art(server, "/ok.whl")) == GOOD  # from the store, no request
    assert _Handler.hits.get("/ok.whl") == before


@pytest.mark.parametrize("path,art_kw,message", [
    ("/ok.whl", {"sha": "0" * 64}, "does not match the pin"),
    ("/ok.whl", {"size": len(PAYLOAD) - 1}, "longer than the pinned size"),
    ("/ok.whl", {"size": len(PAYLOAD) + 1}, "truncated body"),
    ("/empty.whl", {}, "empty body"),
    ("/missing.whl", {}, "HTTP 404"),
    ("/truncated.whl", {}, "gave up after 3 attempts"),
])
def test_bad_downloads_are_clear_errors_and_store_nothing(tmp_path, server, path, art_kw, message):
    store = Store(tmp_path)
    with pytest.raises(FetchError) as e:
        _fetch(store, _art(server, path, **art_kw))
    text = str(e.value)
    assert "declarations/x/x.toml" in text and f"{server}{path}" in text and message in text
    assert list(store.iter_objects()) == [] and list(store.tmp.iterdir()) == []


def test_transient_errors_are_retried(tmp_path, server):
    store = Store(tmp_path)
    assert _fetch(store, _art(server, "/flaky.whl")) == GOOD
    assert _Handler.hits["/flaky.whl"] == 2


def test_timeout_is_reported(tmp_path, server):
    store = Store(tmp_path)
    with pytest.raises(FetchError, match="timed out after 0.5s"):
        _fetch(store, _art(server, "/slow.whl"), retries=1, timeout=0.5)


def test_offline_refuses_to_download(tmp_path, server, monkeypatch):
    monkeypatch.setenv("WHEELPROOF_OFFLINE", "1")
    with pytest.raises(FetchError, match="WHEELPROOF_OFFLINE"):
        _fetch(Store(tmp_path), _art(server, "/ok.whl"))
