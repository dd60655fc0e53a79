"""Hostile URLs, redirects and bodies at fetch time: refused with a clear error, nothing stored.

The fetch re-applies the declaration's URL policy (defence in depth), follows redirects itself
only to allowed URLs, checks every address it connects to, and stops reading a body as soon as
it is longer than declared. The server here is on 127.0.0.1, reachable only with the opt-in.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.request

import pytest

from pipeline.model import limits
from pipeline.model.declaration import Artifact
from pipeline.model.errors import FetchError
from pipeline.realise.fetch import fetch
from pipeline.realise.guarded_http import GuardedRedirects
from pipeline.store.local import Store

PAYLOAD = b"payload " * 512
GOOD = hashlib.sha256(PAYLOAD).hexdigest()
WHAT = "declarations/x/x.toml (sdist)"


class _Handler(http.server.BaseHTTPRequestHandler):
    sent: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        redirects = {
            "/to-file": "file:///etc/passwd",
            "/to-http": "http://example.org/x-1.0-py3-none-any.whl",
            "/to-ftp": "ftp://example.org/x-1.0-py3-none-any.whl",
            "/to-metadata": "https://169.254.169.254/latest/meta-data/",
            "/to-private": "https://10.0.0.1/x-1.0-py3-none-any.whl",
            "/to-userinfo": f"http://user:pw@127.0.0.1:{port}/ok",
            "/to-ok": f"http://127.0.0.1:{port}/ok",
            "/relative": "/ok",
        }
        if self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/ok":
            self._send(200, PAYLOAD)
        elif self.path == "/endless":  # no Content-Length: only the declared size can stop it
            self.send_response(200)
            self.end_headers()
            _Handler.sent["/endless"] = 0
            chunk = b"z" * 65536
            try:
                for _ in range(4096):  # 256 MiB at most, so a broken fetch fails instead of hanging
                    self.wfile.write(chunk)
                    _Handler.sent["/endless"] += len(chunk)
            except OSError:
                pass
        elif self.path == "/announced-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            self.wfile.write(b"z" * 1024)
        elif self.path == "/rude-404":
            self.send_response(404, "Gone \x1b[2J see http://evil.example")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def loopback(monkeypatch):
    monkeypatch.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")


def _fetch(store: Store, url: str, sha: str = GOOD, size: int | None = len(PAYLOAD)) -> str:
    return fetch(store, Artifact("x-1.0-py3-none-any.whl", url, sha, size), what=WHAT, backoff=0.01, retries=2)


def _assert_nothing_stored(store: Store) -> None:
    assert list(store.iter_objects()) == []
    assert not store.tmp.exists() or list(store.tmp.iterdir()) == []


def test_allowed_redirects_are_followed(tmp_path, server, loopback):
    store = Store(tmp_path)
    assert _fetch(store, f"{server}/to-ok") == GOOD
    assert _fetch(Store(tmp_path / "b"), f"{server}/relative") == GOOD


@pytest.mark.parametrize("path,message", [
    ("/to-file", "only https URLs"),
    ("/to-http", "only https URLs"),
    ("/to-ftp", "only https URLs"),
    ("/to-userinfo", "user name or password"),
    ("/to-metadata", "link-local address 169.254.169.254"),
    ("/to-private", "private address 10.0.0.1"),
])
def test_redirect_to_a_forbidden_place_is_refused(tmp_path, server, loopback, path, message):
    store = Store(tmp_path)
    with pytest.raises(FetchError) as e:
        _fetch(store, f"{server}{path}")
    text = str(e.value)
    assert text.startswith(f"{WHAT}: {server}{path}: redirect refused: ") and message in text, text
    assert "gave up" not in text  # a refusal is final, not retried
    _assert_nothing_stored(store)


def test_redirect_to_loopback_without_the_opt_in_is_refused(monkeypatch):
    monkeypatch.delenv("WHEELPROOF_ALLOW_LOOPBACK", raising=False)
    handler = GuardedRedirects()
    request = urllib.request.Request("https://files.example/x-1.0-py3-none-any.whl")
    for target in ("http://127.0.0.1/x", "https://localhost/x"):
        with pytest.raises(FetchError, match="WHEELPROOF_ALLOW_LOOPBACK=1"):
            handler.redirect_request(request, None, 302, "Found", {}, target)  # type: ignore[arg-type]


@pytest.mark.parametrize("url,message", [
    ("file:///etc/passwd", "only https URLs"),
    ("ftp://example.org/x", "only https URLs"),
    ("data:application/octet-stream;base64,AAAA", "only https URLs"),
    ("http://example.org/x-1.0-py3-none-any.whl", "only https URLs"),
    ("https://u:p@example.org/x-1.0-py3-none-any.whl", "user name or password"),
])
def test_url_policy_is_enforced_again_at_fetch_time(tmp_path, url, message):
    store = Store(tmp_path)
    with pytest.raises(FetchError) as e:
        _fetch(store, url)
    assert str(e.value).startswith(f"{WHAT}: ") and message in str(e.value)
    _assert_nothing_stored(store)


def test_a_host_file_is_never_read_nor_described(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0:secret\n" * 547)  # 9,846 bytes: a size no message has by chance
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    store = Store(tmp_path / "store")
    with pytest.raises(FetchError) as e:
        _fetch(store, secret.as_uri(), sha="0" * 64, size=1)
    text = str(e.value)
    assert "only https URLs" in text
    # The size is looked for outside the file's own URL, whose temporary path may hold any digits.
    described = text.replace(WHAT, "").replace(secret.as_uri(), "")
    assert digest not in text and str(secret.stat().st_size) not in described
    _assert_nothing_stored(store)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1"])
def test_other_spellings_of_loopback_are_refused_without_the_opt_in(tmp_path, server, monkeypatch, host):
    monkeypatch.delenv("WHEELPROOF_ALLOW_LOOPBACK", raising=False)
    port = server.rsplit(":", 1)[1]
    store = Store(tmp_path)
    with pytest.raises(FetchError) as e:
        _fetch(store, f"https://{host}:{port}/ok")
    assert "loopback address 127.0.0.1" in str(e.value) and "gave up" not in str(e.value), str(e.value)
    _assert_nothing_stored(store)


def test_endless_body_is_cut_at_the_declared_size(tmp_path, server, loopback):
    store = Store(tmp_path)
    with pytest.raises(FetchError) as e:
        _fetch(store, f"{server}/endless", sha=GOOD, size=1000)
    assert "longer than the pinned size 1000" in str(e.value) and "gave up" not in str(e.value)
    _assert_nothing_stored(store)
    assert _Handler.sent["/endless"] < 64 << 20  # the server was cut off long before its 256 MiB


def test_announced_oversize_body_is_refused_unread(tmp_path, server, loopback):
    store = Store(tmp_path)
    with pytest.raises(FetchError, match="longer than the pinned size 1000"):
        _fetch(store, f"{server}/announced-huge", size=1000)
    _assert_nothing_stored(store)


def test_unsized_download_is_capped(tmp_path, server, loopback, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ARTIFACT_SIZE", 4096)
    store = Store(tmp_path)
    with pytest.raises(FetchError, match="longer than the size limit 4096"):
        _fetch(store, f"{server}/endless", size=None)
    _assert_nothing_stored(store)


def test_server_chosen_reason_phrase_is_not_echoed(tmp_path, server, loopback):
    with pytest.raises(FetchError) as e:
        _fetch(Store(tmp_path), f"{server}/rude-404")
    assert "HTTP 404 Not Found" in str(e.value) and "evil" not in str(e.value) and "\x1b" not in str(e.value)


@pytest.mark.parametrize("address,refusal", [
    ("10.1.2.3", "private address 10.1.2.3"),
    ("172.16.0.1", "private address 172.16.0.1"),
    ("192.168.1.1", "private address 192.168.1.1"),
    ("100.64.0.1", "private address 100.64.0.1"),
    ("fd00::1", "private address fd00::1"),
    ("::ffff:10.0.0.1", "private address 10.0.0.1"),  # IPv4-mapped IPv6 is judged as its IPv4 address
    ("169.254.169.254", "link-local address 169.254.169.254"),
    ("fe80::1%eth0", "link-local address fe80::1"),
    ("0.0.0.0", "unspecified address 0.0.0.0"),
    ("224.0.0.1", "multicast address 224.0.0.1"),
    ("240.0.0.1", "reserved address 240.0.0.1"),
    ("127.0.0.2", "loopback address 127.0.0.2"),
    ("::1", "loopback address ::1"),
    ("8.8.8.8", None),
    ("2606:4700::1", None),
])
def test_address_classes(monkeypatch, address, refusal):
    from pipeline.model.urlpolicy import address_problem

    monkeypatch.delenv("WHEELPROOF_ALLOW_LOOPBACK", raising=False)
    problem = address_problem(address)
    assert (problem is None) if refusal is None else (problem is not None and problem.startswith(refusal))
    monkeypatch.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")
    assert (address_problem(address) is None) == (refusal is None or refusal.startswith("loopback"))
