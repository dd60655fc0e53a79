"""Both gateway servers, started on a free port for tests: the threaded one and asyncio/uvloop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvloop

from pipeline.export.ipfs import server as aserver
from pipeline.export.ipfs.answers import AnswerCache
from pipeline.export.ipfs.gateway import GatewayServer
from pipeline.store.local import Store

KINDS = ("threaded", "async")


@contextmanager
def running(kind: str, store: Store, max_concurrency: int = 8, idle_timeout: float = 5.0,
            cache: AnswerCache | None = None) -> Iterator[int]:
    """Yield the port of a running gateway of ``kind`` over ``store`` (``cache``: the async one's answers)."""
    if kind == "threaded":
        server = GatewayServer(("127.0.0.1", 0), store, max_concurrency=max_concurrency, idle_timeout=idle_timeout)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
        return
    loop = uvloop.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        srv = loop.run_until_complete(aserver.start(store, "127.0.0.1", 0, max_concurrency, idle_timeout,
                                                        cache))
        box["server"], box["port"] = srv, srv.sockets[0].getsockname()[1]
        started.set()
        loop.run_forever()
        srv.close()
        loop.run_until_complete(srv.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        port = box["port"]
        assert isinstance(port, int)
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
