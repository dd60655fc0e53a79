"""A local IPFS gateway serving snapshots from the store (no unpacked copy, no daemon).

Path gateway (https://specs.ipfs.tech/http-gateways/path-gateway/): ``/ipfs/<cid>/<path>``;
directories serve their index.html (301 to the trailing slash first) or a listing; files with
content types, ``Cache-Control: public, max-age=29030400, immutable``, ETag, HEAD and single Range.
Trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/): ``?format=raw`` /
``?format=car`` or the ``application/vnd.ipld.raw`` / ``application/vnd.ipld.car`` Accept types.
PEP 691 negotiation on simple-index directories: ``application/vnd.pypi.simple.v1+json`` gets
index.json, HTML types get index.html; an Accept that allows neither gets 406.

Every block is re-hashed as it is read; a corrupt block is never served (500). A corrupt block found
after the headers went out aborts the connection (the client sees a body shorter than its
Content-Length, never error text inside a 200). Unknown CIDs and missing paths are 404; malformed
CIDs, invalid percent-encoding (RFC 3986 §2.1, UTF-8) and path traversal are 400. At most
``max_concurrency`` requests are handled at once; the rest get 503. A connection idle for
``idle_timeout`` seconds is closed. Persistent connections (RFC 9112 §9.3): HTTP/1.1 unless
``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``, answered with the same header
(every response has a Content-Length).
"""

from __future__ import annotations

import html
import io
import mimetypes
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.export.ipfs import car, dagpb
from pipeline.export.ipfs.blocks import BlockSource
from pipeline.export.ipfs.multiformats import CID, RAW, CIDError
from pipeline.export.ipfs.unixfs import hamt_hash
from pipeline.export.snapshot import JSON_INDEX, SNAPSHOT_KIND, walk
from pipeline.model.errors import IntegrityError, StoreError
from pipeline.store.local import Store

__all__ = ["DEFAULT_IDLE_TIMEOUT", "BadRequest", "DagReader", "GatewayHandler", "GatewayServer", "Node",
           "NotFound", "negotiate", "parse_accept", "serve"]

DEFAULT_IDLE_TIMEOUT = 5.0
IMMUTABLE = "public, max-age=29030400, immutable"
PEP691_JSON = "application/vnd.pypi.simple.v1+json"
PEP691_HTML = "application/vnd.pypi.simple.v1+html"
IPLD_RAW = "application/vnd.ipld.raw"
IPLD_CAR = "application/vnd.ipld.car"
_TYPES = {".whl": "application/zip", ".metadata": "text/plain; charset=utf-8", ".json": "application/json",
          ".html": "text/html; charset=utf-8", ".car": IPLD_CAR}


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Node:
    cid: CID
    block: bytes
    pb: dagpb.Node | None
    unixfs: dagpb.UnixFSData | None

    @property
    def is_dir(self) -> bool:
        return self.unixfs is not None and self.unixfs.type in (dagpb.DIRECTORY, dagpb.HAMT_SHARD)


class DagReader:
    """Reads UnixFS from the store's blocks (or any verifying :class:`BlockSource`), verifying every block."""

    def __init__(self, store: BlockSource):
        self.store = store

    def node(self, cid: CID) -> Node:
        if not self.store.has(cid.hex_digest):
            raise NotFound(f"block {cid} is not in this gateway's store")
        block = self.store.read_bytes(cid.hex_digest)  # raises IntegrityError if corrupt
        if cid.codec == RAW:
            return Node(cid, block, None, None)
        try:
            pb = dagpb.decode(block)
            return Node(cid, block, pb, dagpb.UnixFSData.decode(pb.data or b""))
        except (dagpb.DagPBError, UnicodeDecodeError) as e:
            raise NotFound(f"{cid} is not a UnixFS node: {e}") from None

    def lookup(self, node: Node, name: str) -> CID | None:
        assert node.pb is not None and node.unixfs is not None
        if node.unixfs.type == dagpb.DIRECTORY:
            return next((link.cid for link in node.pb.links if link.name == name), None)
        digest, depth = hamt_hash(name), 0
        while True:
            label = f"{digest[depth]:02X}"
            link = next((x for x in node.pb.links if x.name and x.name.startswith(label)), None)
            if link is None:
                return None
            if link.name == label:  # a sub-shard: one level deeper
                node, depth = self.node(link.cid), depth + 1
                assert node.pb is not None
                continue
            return link.cid if link.name == label + name else None

    def entries(self, node: Node) -> Iterator[tuple[str, dagpb.Link]]:
        assert node.pb is not None and node.unixfs is not None
        if node.unixfs.type == dagpb.DIRECTORY:
            yield from ((link.name or "", link) for link in node.pb.links)
            return
        for link in node.pb.links:
            name = link.name or ""
            if len(name) == 2:
                yield from self.entries(self.node(link.cid))
            else:
                yield name[2:], link

    def resolve(self, root: CID, segments: list[str]) -> Node:
        node = self.node(root)
        for i, seg in enumerate(segments):
            if not node.is_dir:
                raise NotFound(f"/{'/'.join(segments[:i])} is a file, not a directory")
            cid = self.lookup(node, seg)
            if cid is None:
                raise NotFound(f"no such path /{'/'.join(segments[:i + 1])} in {root}")
            node = self.node(cid)
        return node

    def size(self, node: Node) -> int:
        if node.unixfs is None:
            return len(node.block)
        if node.unixfs.filesize is not None:
            return node.unixfs.filesize
        return len(node.unixfs.data or b"") + sum(node.unixfs.blocksizes)

    def read(self, node: Node, start: int, end: int) -> Iterator[bytes]:
        """File bytes [start, end) by walking the DAG (raw or dag-pb leaves)."""
        if node.unixfs is None:
            yield node.block[start:end]
            return
        data = node.unixfs.data or b""
        if start < len(data):
            yield data[start:min(end, len(data))]
        offset = len(data)
        assert node.pb is not None
        for link, size in zip(node.pb.links, node.unixfs.blocksizes, strict=False):
            if offset >= end:
                break
            if offset + size > start:
                child = self.node(link.cid)
                yield from self.read(child, max(0, start - offset), min(size, end - offset))
            offset += size


def parse_accept(header: str | None) -> list[tuple[str, float]]:
    out = []
    for part in (header or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        out.append((fields[0].lower(), q))
    return out


def negotiate(accept: str | None, offered: list[str]) -> str | None:
    """The offered type the client prefers (server order breaks ties); None if it accepts none."""
    prefs = parse_accept(accept)
    if not prefs:
        return offered[0]
    best, best_q = None, 0.0
    for t in offered:
        major = t.split("/")[0]
        q = max((q for a, q in prefs if a in (t, f"{major}/*", "*/*")), default=0.0)
        if q > best_q:
            best, best_q = t, q
    return best


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: BlockSource, max_concurrency: int = 16,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        self.store = store
        self.reader = DagReader(store)
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.idle_timeout = idle_timeout
        super().__init__(address, GatewayHandler)


class GatewayHandler(BaseHTTPRequestHandler):
    server: GatewayServer
    server_version = "wheelproof-gateway/0.1"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)  # every recv/send; handle_one_request closes

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
            self._route(head)
        except BadRequest as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e), head)
        except NotFound as e:
            self._error(HTTPStatus.NOT_FOUND, str(e), head)
        except IntegrityError as e:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"refusing to serve a corrupt block: {e}", head)
        except StoreError as e:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e), head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.server.slots.release()

    # -- routing ---------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        raw_segments = parsed.path.split("/")
        if parsed.path in ("/", ""):
            return self._landing(head)
        if len(raw_segments) < 3 or raw_segments[1] != "ipfs" or not raw_segments[2]:
            raise NotFound("paths are /ipfs/<cid>/…")
        try:
            root = CID.parse(raw_segments[2])
        except CIDError as e:
            raise BadRequest(f"invalid CID {raw_segments[2]!r}: {e}") from None
        segments = []
        for raw in raw_segments[3:]:
            try:
                seg = urllib.parse.unquote(raw, errors="strict")
            except UnicodeDecodeError:
                raise BadRequest(f"path segment {raw!r} is not valid percent-encoded UTF-8") from None
            if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
                raise BadRequest(f"path segment {raw!r} is not allowed")
            if seg:
                segments.append(seg)
        trailing = parsed.path.endswith("/")
        node = self.server.reader.resolve(root, segments)
        fmt = (query.get("format") or [""])[0]
        accept = self.headers.get("Accept")
        if not fmt and accept:
            chosen = [a for a, q in parse_accept(accept) if q > 0 and a in (IPLD_RAW, IPLD_CAR)]
            fmt = {IPLD_RAW: "raw", IPLD_CAR: "car"}.get(chosen[0], "") if chosen else ""
        if fmt == "raw":
            return self._send(node.block, IPLD_RAW, f'"{node.cid}.raw"', head, attachment=f"{node.cid}.bin")
        if fmt == "car":
            buf = io.BytesIO()
            car.write(buf, [node.cid], walk(self.server.store, node.cid))
            return self._send(buf.getvalue(), f"{IPLD_CAR}; version=1", f'"{node.cid}.car"', head,
                              attachment=f"{node.cid}.car")
        if fmt:
            raise BadRequest(f"unsupported format {fmt!r} (raw or car)")
        if node.is_dir:
            if not trailing:
                location = parsed.path + "/" + (f"?{parsed.query}" if parsed.query else "")
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self._directory(node, parsed.path, accept, head)
        name = segments[-1] if segments else ""
        self._file(node, _content_type(name), accept_ranges=True, head=head)

    def _directory(self, node: Node, path: str, accept: str | None, head: bool) -> None:
        reader = self.server.reader
        index_html, index_json = reader.lookup(node, "index.html"), reader.lookup(node, JSON_INDEX)
        if index_html is not None and index_json is not None:
            offered = ["text/html", PEP691_HTML, PEP691_JSON]
            chosen = negotiate(accept, offered)
            if chosen is None:
                return self._error(HTTPStatus.NOT_ACCEPTABLE, f"acceptable types: {', '.join(offered)}", head)
            target = index_json if chosen == PEP691_JSON else index_html
            ctype = chosen if chosen != "text/html" else "text/html; charset=utf-8"
            return self._file(reader.node(target), ctype, accept_ranges=False, head=head, vary=True)
        if index_html is not None:
            return self._file(reader.node(index_html), "text/html; charset=utf-8", accept_ranges=False, head=head)
        rows = [f'<a href="{html.escape(urllib.parse.quote(n))}">{html.escape(n)}</a> {link.tsize or 0}<br>'
                for n, link in sorted(reader.entries(node), key=lambda e: e[0])]
        body = (f"<!DOCTYPE html><html><head><title>{html.escape(path)}</title></head><body>"
                f"<h1>Index of {html.escape(path)}</h1>{''.join(rows)}</body></html>").encode()
        self._send(body, "text/html; charset=utf-8", f'"DirIndex-{node.cid}"', head)

    def _landing(self, head: bool) -> None:
        store = self.server.store
        roots = [name for _, name, _ in store.list_refs(SNAPSHOT_KIND)] if isinstance(store, Store) else []
        items = "".join(f'<li><a href="/ipfs/{r}/">{r}</a></li>' for r in roots)
        body = (f"<!DOCTYPE html><html><head><title>Wheelproof gateway</title></head><body>"
                f"<h1>Snapshots in this store</h1><ul>{items}</ul></body></html>").encode()
        self._send(body, "text/html; charset=utf-8", None, head, cache=False)

    # -- responses ------------------------------------------------------------------------
    def _file(self, node: Node, ctype: str, accept_ranges: bool, head: bool, vary: bool = False) -> None:
        reader = self.server.reader
        size = reader.size(node)
        etag = f'"{node.cid}"'
        if self.headers.get("If-None-Match") in (etag, f"W/{etag}"):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", IMMUTABLE)
            self.end_headers()
            return
        start, end, status = 0, size, HTTPStatus.OK
        rng = self.headers.get("Range") if accept_ranges else None
        if rng:
            parsed = _parse_range(rng, size)
            if parsed == "unsatisfiable":
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(parsed, tuple):
                start, end = parsed
                status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", IMMUTABLE)
        self.send_header("X-Ipfs-Path", urllib.parse.urlsplit(self.path).path)
        self.send_header("X-Ipfs-Roots", str(node.cid))
        if accept_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if vary:
            self.send_header("Vary", "Accept")
        self.end_headers()
        if not head:
            # blocks are verified as they are read: a corrupt or missing one aborts the connection
            try:
                for chunk in reader.read(node, start, end):
                    self.wfile.write(chunk)
            except (StoreError, NotFound) as e:
                self._abort(e)

    def _send(self, body: bytes, ctype: str, etag: str | None, head: bool, attachment: str | None = None,
              cache: bool = True) -> None:
        if etag and self.headers.get("If-None-Match") == etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Cache-Control", IMMUTABLE if cache else "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if attachment:
            self.send_header("Content-Disposition", f'attachment; filename="{attachment}"')
        self.send_header("Vary", "Accept")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str, head: bool) -> None:
        body = f"{status.value} {status.phrase}: {message}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _content_type(name: str) -> str:
    for suffix, ctype in _TYPES.items():
        if name.endswith(suffix):
            return ctype
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range (RFC 9110) as [start, end), "unsatisfiable", or None to ignore the header
    (unparsable, or several ranges: answered with the whole file, as RFC 9110 allows)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


def serve(store: Store, host: str = "127.0.0.1", port: int = 8080, max_concurrency: int = 16,
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
    server = GatewayServer((host, port), store, max_concurrency, idle_timeout)
    print(f"gateway: serving {store.root} at http://{host}:{server.server_address[1]}/ipfs/<cid>/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
