"""A local IPFS gateway serving snapshots from the store (no unpacked copy, no daemon).

What is answered is decided in :mod:`pipeline.export.ipfs.respond` (path and trustless gateway specs,
RFC 9110 conditional and range requests); ``doit serve`` sends it with the asyncio/uvloop server
(:mod:`pipeline.export.ipfs.server`). This module is the threaded front end over :mod:`http.server`,
for block sources that block (the verifying proxy in :mod:`pipeline.client.proxy` fetches each block
from an untrusted gateway): at most ``max_concurrency`` requests are handled at once, the rest get 503;
a connection idle for ``idle_timeout`` seconds is closed; persistent connections follow RFC 9112 §9.3
(HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``, echoed).
Bodies of unknown length (CARs) are chunked (HTTP/1.1) or end with the connection (HTTP/1.0). A
corrupt block found after the headers went out aborts the connection: the client sees a short or
unterminated body, never error text inside a 200.
"""

from __future__ import annotations

import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.export.ipfs.blocks import BlockSource, VerifiedBlocks
from pipeline.export.ipfs.dag import BadRequest, DagReader, FileSpan, Node, NotFound
from pipeline.export.ipfs.respond import Answer, negotiate, parse_accept, respond
from pipeline.model.errors import StoreError
from pipeline.model.records import SNAPSHOT_KIND
from pipeline.store.local import Store

__all__ = ["DEFAULT_IDLE_TIMEOUT", "BadRequest", "DagReader", "GatewayHandler", "GatewayServer", "Node",
           "NotFound", "negotiate", "parse_accept", "serve", "snapshot_roots"]

DEFAULT_IDLE_TIMEOUT = 5.0


def snapshot_roots(store: BlockSource) -> list[str]:
    return [name for _, name, _ in store.list_refs(SNAPSHOT_KIND)] if isinstance(store, Store) else []


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: BlockSource, max_concurrency: int = 16,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        self.store = store
        self.reader = DagReader(VerifiedBlocks(store) if isinstance(store, Store) else store)
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.idle_timeout = idle_timeout
        super().__init__(address, GatewayHandler)


class GatewayHandler(BaseHTTPRequestHandler):
    server: GatewayServer
    _error_headers: list[tuple[str, str]] | None = None
    server_version = "wheelproof-gateway/0.2"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # every recv/send; handle_one_request closes
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self._connection_sent = False
        super().send_response_only(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection":
            self._connection_sent = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        # RFC 9112 §9.3: an HTTP/1.0 client keeps the connection only if the response says keep-alive
        if not getattr(self, "_connection_sent", False):
            if self.close_connection:
                self.send_header("Connection", "close")
            elif self.request_version == "HTTP/1.0":
                self.send_header("Connection", "keep-alive")
        super().end_headers()

    def _abort(self, error: Exception) -> None:
        """Headers are out: end the connection so the body is visibly short, never text in a 200 body."""
        print(f"gateway: aborted {self.path}: {error}", file=sys.stderr, flush=True)
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, head: bool) -> None:
        if not self.server.slots.acquire(timeout=10):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many requests in flight", head)
            return
        try:
            headers = {k.lower(): v for k, v in self.headers.items()}
            if len(self.headers.get_all("If-None-Match") or []) > 1:
                headers["if-none-match"] = ", ".join(self.headers.get_all("If-None-Match") or [])
            answer = respond(self.server.reader, "HEAD" if head else "GET", self.path, headers,
                             lambda: snapshot_roots(self.server.store))
            if answer.status >= 400:
                self._error_headers = [(k, v) for k, v in answer.headers
                                       if k not in ("Content-Type", "X-Content-Type-Options")]
                self._error(HTTPStatus(answer.status), answer.message, head)
            else:
                self._send(answer, head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.server.slots.release()

    def _send(self, answer: Answer, head: bool) -> None:
        chunked = answer.length is None and self.request_version != "HTTP/1.0"
        if answer.length is None and not chunked:
            self.close_connection = True  # HTTP/1.0: the body ends with the connection
        self.send_response(answer.status)
        for k, v in answer.headers:
            self.send_header(k, v)
        if answer.length is not None and answer.status != 304:
            self.send_header("Content-Length", str(answer.length))
        elif chunked and not head:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        body = answer.body
        if isinstance(body, bytes):
            self.wfile.write(body)
            return
        try:  # blocks are verified as they are read: a corrupt or missing one aborts the connection
            for chunk in body:
                if isinstance(chunk, FileSpan):
                    with open(chunk.path, "rb") as f:
                        if chunked:
                            self.wfile.write(f"{chunk.length:x}\r\n".encode())
                        self.connection.sendfile(f, chunk.offset, chunk.length)
                        if chunked:
                            self.wfile.write(b"\r\n")
                elif chunk:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (StoreError, NotFound) as e:
            self._abort(e)

    def _error(self, status: HTTPStatus, message: str, head: bool) -> None:
        extra: list[tuple[str, str]] | None = getattr(self, "_error_headers", None)
        self._error_headers = None
        body = f"{status.value} {status.phrase}: {message}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra if extra is not None else [("Cache-Control", "no-cache")]:
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def serve(store: Store, host: str = "127.0.0.1", port: int = 8080, max_concurrency: int = 64,
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
    """``doit serve``: the asyncio/uvloop server (:mod:`pipeline.export.ipfs.server`) over the store."""
    from pipeline.export.ipfs.server import run

    run(store, host, port, max_concurrency, idle_timeout)
