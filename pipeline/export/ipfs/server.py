"""``doit serve``: the gateway over asyncio with uvloop, HTTP/1.1 parsed by httptools.

Sends what :func:`pipeline.export.ipfs.respond.respond` decides. One protocol object per connection:
requests are parsed by httptools (llhttp), answered in order (pipelined requests wait their turn),
small bodies are written with their headers in one ``write`` (TCP_NODELAY, so no Nagle delay on a
reused connection), file bodies go out block by block with ``os.sendfile`` from the verified block
file whenever the transport's buffer is empty (else through the transport, waiting for it to drain:
memory per connection stays bounded by one block), CARs are chunked (HTTP/1.1) or close-delimited
(HTTP/1.0) and streamed block by block. Persistent connections follow RFC 9112 §9.3 (httptools'
``should_keep_alive``: HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with ``keep-alive``,
echoed). Limits: request target 8 KiB, headers 64 KiB / 100 fields (431), bodies 64 KiB (413), at
most ``max_concurrency`` streamed answers at once (503), connections idle for ``idle_timeout`` seconds
closed. A block found corrupt or missing after the headers went out aborts the connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any, cast

import httptools
import uvloop

from pipeline.export.ipfs.answers import AnswerCache, CachedAnswer, Key
from pipeline.export.ipfs.blocks import VerifiedBlocks
from pipeline.export.ipfs.dag import DagReader, FileSpan, NotFound
from pipeline.export.ipfs.gateway import snapshot_roots
from pipeline.export.ipfs.respond import IMMUTABLE, REQUEST_HEADERS, Answer, Chunk, respond
from pipeline.model.errors import StoreError
from pipeline.store.local import Store

__all__ = ["MAX_HEADER_BYTES", "MAX_HEADERS", "MAX_TARGET", "AsyncGateway", "run", "start"]

MAX_TARGET = 8 << 10
MAX_HEADER_BYTES = 64 << 10
MAX_HEADERS = 100
MAX_BODY = 64 << 10
_PIPELINE = 16  # queued requests per connection before reading pauses
_PHRASES = {200: "OK", 206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
            400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            413: "Content Too Large", 416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class _TooLarge(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


class AsyncGateway:
    """Shared state of one server: the reader (verified-once blocks), limits and the date cache."""

    def __init__(self, store: Store, max_concurrency: int = 64, idle_timeout: float = 5.0,
                 cache: AnswerCache | None = None):
        self.store = store
        self.reader = DagReader(VerifiedBlocks(store))
        self.max_concurrency = max_concurrency
        self.idle_timeout = idle_timeout
        self.streaming = 0
        # serialized immutable answers with small bodies, by request (pipeline.export.ipfs.answers)
        self.cache = cache if cache is not None else AnswerCache()
        self._date_at, self._date = 0, b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at, self._date = now, formatdate(now, usegmt=True).encode()
        return self._date


class _Request:
    __slots__ = ("method", "target", "headers", "keep_alive", "version")

    def __init__(self, method: str, target: str, headers: dict[str, str], keep_alive: bool, version: str):
        self.method, self.target, self.headers, self.keep_alive, self.version = (
            method, target, headers, keep_alive, version)


class _Connection(asyncio.Protocol):
    def __init__(self, app: AsyncGateway):
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closed = False
        self.reading_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.waiting_since = self.loop.time()  # since the last answer went out or a request began
        self._reset_message()

    # -- transport callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.transport.set_write_buffer_limits(high=64 << 10, low=0)
        self.idle = self.loop.call_later(self.app.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.idle.cancel()
        if self.drained and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        if self.drained is None or self.drained.done():
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.drained and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError:
            self._fail(self._too_large.status if self._too_large else 400,
                       self._too_large.message if self._too_large else "malformed request")
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed request: {e}")

    # -- parser callbacks ------------------------------------------------------------------------
    def _reset_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.header_count = 0
        self.body_bytes = 0
        self._too_large: _TooLarge | None = None

    def on_message_begin(self) -> None:
        self.waiting_since = self.loop.time()  # the request's head must be complete within idle_timeout
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_TARGET:
            self._too_large = _TooLarge(431, f"request target longer than {MAX_TARGET} bytes")
            raise self._too_large

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        self.header_count += 1
        if self.header_bytes > MAX_HEADER_BYTES or self.header_count > MAX_HEADERS:
            self._too_large = _TooLarge(431, f"request headers over {MAX_HEADER_BYTES} bytes or "
                                             f"{MAX_HEADERS} fields")
            raise self._too_large
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_BODY:
            self._too_large = _TooLarge(413, f"request body over {MAX_BODY} bytes (GET and HEAD need none)")
            raise self._too_large

    def on_message_complete(self) -> None:
        version = self.parser.get_http_version()
        request = _Request(self.parser.get_method().decode("latin-1"), self.url.decode("latin-1"),
                           self.headers, self.parser.should_keep_alive(), version)
        if not self.busy and not self.queue:  # the usual case: answered at once
            if self._answer(request):
                self.waiting_since = self.loop.time()
            return
        self.queue.append(request)
        if len(self.queue) > _PIPELINE and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        if not self.busy:
            self._next()

    # -- answering ---------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        """One timer per connection, not one per request: close when nothing is being answered and no
        request was completed within ``idle_timeout`` (of the last answer, or of the request's start, so
        a head trickled in byte by byte is cut off too); else look again when that time is up."""
        self.idle = None
        if self.closed:
            return
        timeout = self.app.idle_timeout
        if self.busy or self.queue:
            self.idle = self.loop.call_later(timeout, self._check_idle)
            return
        left = self.waiting_since + timeout - self.loop.time()
        if left <= 0:
            self._close()
        else:
            self.idle = self.loop.call_later(left, self._check_idle)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        body = f"{status} {_PHRASES.get(status, '')}: {message}\n".encode()
        self._write_head(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-cache")],
                         len(body), "1.1", False, body)
        self._close()

    def _next(self) -> None:
        while self.queue and not self.closed:
            request = self.queue.popleft()
            if self.reading_paused and len(self.queue) <= _PIPELINE // 2:
                self.transport.resume_reading()
                self.reading_paused = False
            if not self._answer(request):
                return  # a streamed answer continues in a task, which calls _next when done
        self.waiting_since = self.loop.time()

    def _answer(self, request: _Request) -> bool:
        """Answer one request; True if done, False if a task streams the rest."""
        app = self.app
        keep = request.keep_alive
        key: Key = (request.method, request.target, request.version, "keep" if keep else "close",
                    *map(request.headers.get, REQUEST_HEADERS))
        hit = app.cache.get(key)
        if hit is not None:
            self.transport.write(hit.render(app.date()))
            if not keep:
                self._close()
            return True
        head = request.method == "HEAD"
        answer = respond(app.reader, request.method, request.target, request.headers, lambda: snapshot_roots(app.store))
        body = answer.body
        if isinstance(body, bytes) or head:
            payload = body if isinstance(body, bytes) and not head else b""
            length = answer.length if answer.length is not None else (None if head else len(payload))
            before, after = self._head(answer.status, answer.headers, length, request.version, keep)
            after += payload
            self.transport.write(before + app.date() + after)
            if len(payload) <= app.cache.max_body and ("Cache-Control", IMMUTABLE) in answer.headers:
                app.cache.put(key, CachedAnswer(before, after))
            if not keep:
                self._close()
            return True
        if app.streaming >= app.max_concurrency:
            self._write_head(503, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-cache"),
                                   ("Retry-After", "1")], 30, request.version, keep,
                             b"503: too many answers in flight\n")
            return True
        chunked = answer.length is None and request.version != "1.0"
        if answer.length is None and not chunked:
            keep = False
        self._write_head(answer.status, answer.headers, answer.length, request.version, keep, b"", chunked=chunked)
        app.streaming += 1
        self.busy = True
        task = self.loop.create_task(self._stream(answer, body, chunked, keep))
        task.add_done_callback(_report)
        return False

    def _write_head(self, status: int, headers: list[tuple[str, str]], length: int | None, version: str,
                    keep: bool, body: bytes, chunked: bool = False) -> None:
        before, after = self._head(status, headers, length, version, keep, chunked)
        self.transport.write(before + self.app.date() + after + body)

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]], length: int | None, version: str, keep: bool,
              chunked: bool = False) -> tuple[bytes, bytes]:
        """The response head around its Date value (RFC 9112 §4, §6): status line up to ``Date: ``, then
        the rest of the fields and the blank line."""
        lines = [b"", *(f"{k}: {v}".encode("latin-1") for k, v in headers)]
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif length is not None and status != 304:
            lines.append(b"Content-Length: %d" % length)
        if not keep:
            lines.append(b"Connection: close")
        elif version == "1.0":
            lines.append(b"Connection: keep-alive")
        before = f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}\r\nServer: wheelproof-gateway/0.2\r\nDate: "
        return before.encode(), b"\r\n".join(lines) + b"\r\n\r\n"

    async def _drain(self) -> None:
        if self.drained is not None and not self.drained.done():
            await self.drained

    async def _stream(self, answer: Answer, body: Iterator[Chunk], chunked: bool, keep: bool) -> None:
        try:
            for chunk in body:
                if self.closed:
                    return
                if isinstance(chunk, FileSpan):
                    if chunked:
                        self.transport.write(b"%x\r\n" % chunk.length)
                    await self._sendfile(chunk)
                    if chunked:
                        self.transport.write(b"\r\n")
                elif chunk:
                    self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._drain()
            if chunked:
                self.transport.write(b"0\r\n\r\n")
        except (StoreError, NotFound, OSError) as e:
            if not self.closed and not isinstance(e, ConnectionError):  # a client leaving is not news
                print(f"gateway: aborted: {e}", file=sys.stderr, flush=True)
            self.closed = True
            self.transport.abort()  # the client sees a short or unterminated body, never error text
            return
        finally:
            self.app.streaming -= 1
            self.busy = False
        if not keep:
            self._close()
            return
        self._next()

    async def _sendfile(self, span: FileSpan) -> None:
        """``span`` with os.sendfile while the transport has nothing buffered, else through it."""
        fd = os.open(span.path, os.O_RDONLY)
        try:
            offset, left = span.offset, span.length
            while left > 0:
                if self.closed:
                    raise ConnectionResetError("the client went away")
                if self.transport.get_write_buffer_size() == 0:
                    try:
                        sent = os.sendfile(self.fd, fd, offset, left)
                        if sent == 0:
                            raise StoreError(f"{span.path} is shorter than its block should be")
                        offset, left = offset + sent, left - sent
                        continue
                    except BlockingIOError:
                        pass
                data = os.pread(fd, min(left, 256 << 10), offset)
                if not data:
                    raise StoreError(f"{span.path} is shorter than its block should be")
                self.transport.write(data)
                offset, left = offset + len(data), left - len(data)
                await self._drain()
        finally:
            os.close(fd)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"gateway: {task.exception()!r}", file=sys.stderr, flush=True)


async def start(store: Store, host: str, port: int, max_concurrency: int = 64,
                idle_timeout: float = 5.0, cache: AnswerCache | None = None) -> asyncio.Server:
    app = AsyncGateway(store, max_concurrency, idle_timeout, cache)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(app), host, port, reuse_address=True, backlog=1024)


def run(store: Store, host: str = "127.0.0.1", port: int = 8080, max_concurrency: int = 64,
        idle_timeout: float = 5.0) -> None:
    async def main() -> None:
        server = await start(store, host, port, max_concurrency, idle_timeout)
        bound = server.sockets[0].getsockname()[1]
        print(f"gateway: serving {store.root} at http://{host}:{bound}/ipfs/<cid>/", flush=True)
        async with server:
            await server.serve_forever()

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
