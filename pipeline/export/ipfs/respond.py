"""What the gateway answers, independent of the HTTP server that sends it.

Path gateway (https://specs.ipfs.tech/http-gateways/path-gateway/) and trustless gateway
(https://specs.ipfs.tech/http-gateways/trustless-gateway/) semantics, and RFC 9110 conditional and
range requests. :func:`respond` turns a request (method, target, headers) into an :class:`Answer`:
status, headers and a body that is bytes or a stream of chunks (bytes, or verified block-file spans
a server may ``sendfile``). Both servers (:mod:`pipeline.export.ipfs.server`, asyncio/uvloop, and the
threaded :mod:`pipeline.export.ipfs.gateway` the verifying proxy builds on) send what this decides.
"""

from __future__ import annotations

import hashlib
import html
import io
import mimetypes
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from pipeline.export.ipfs import car
from pipeline.export.ipfs.dag import BadRequest, DagReader, FileSpan, Node, NotFound, Resolved
from pipeline.export.ipfs.multiformats import CID, CIDError
from pipeline.export.ipfs.selection import SCOPES, CarSelection, blocks, parse_entity_bytes
from pipeline.model.errors import IntegrityError, StoreError

__all__ = ["IMMUTABLE", "IPLD_CAR", "IPLD_RAW", "PEP691_HTML", "PEP691_JSON", "PROBE_CID", "REQUEST_HEADERS",
           "Answer", "Chunk", "car_stream", "negotiate", "parse_accept", "respond"]

IMMUTABLE = "public, max-age=29030400, immutable"
NO_CACHE = "no-cache"
PEP691_JSON = "application/vnd.pypi.simple.v1+json"
PEP691_HTML = "application/vnd.pypi.simple.v1+html"
IPLD_RAW = "application/vnd.ipld.raw"
IPLD_CAR = "application/vnd.ipld.car"
JSON_INDEX = "index.json"
# the identity CID of zero bytes: the path gateway's probe (https://specs.ipfs.tech/http-gateways/path-gateway/)
PROBE_CID = "bafkqaaa"
# every request header :func:`respond` reads (lower case): an answer depends on the method, the target and
# these alone, so a server may remember immutable answers by them (pipeline.export.ipfs.answers)
REQUEST_HEADERS = ("accept", "if-none-match", "range", "service-worker")
MAX_ETAGS = 64  # If-None-Match entity tags evaluated at most; a longer list is a 400
_TYPES = {".whl": "application/zip", ".metadata": "text/plain; charset=utf-8", ".json": "application/json",
          ".html": "text/html; charset=utf-8", ".car": IPLD_CAR}

Chunk = bytes | FileSpan


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterator[Chunk] = b""
    length: int | None = 0  # None: unknown in advance (chunked, or close-delimited for HTTP/1.0)
    message: str = ""       # for errors: the reason, also in the body


def parse_accept(header: str | None) -> list[tuple[str, float]]:
    return [(t, q) for t, q, _ in _accept_entries(header)]


def _accept_entries(header: str | None) -> list[tuple[str, float, dict[str, str]]]:
    out = []
    for part in (header or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        q, params = 1.0, {}
        for f in fields[1:]:
            k, _, v = f.partition("=")
            k, v = k.strip().lower(), v.strip().strip('"')
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
            else:
                params[k] = v
        out.append((fields[0].lower(), q, params))
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


def _error(status: int, message: str) -> Answer:
    body = f"{status} {_PHRASES.get(status, '')}: {message}\n".encode()
    return Answer(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", NO_CACHE),
                           ("X-Content-Type-Options", "nosniff")], body, len(body), message)


_PHRASES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            412: "Precondition Failed", 416: "Range Not Satisfiable", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _etags(header: str) -> list[str] | None:
    """RFC 9110 §13.1.2: ``*`` or a list of entity tags (opaque parts, weak or strong); None for ``*``."""
    if header.strip() == "*":
        return None
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if len(tags) > MAX_ETAGS:
        raise BadRequest(f"If-None-Match lists {len(tags)} entity tags (at most {MAX_ETAGS})")
    return [t[2:] if t.startswith("W/") else t for t in tags]


def _matches(header: str | None, etags: list[str]) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 §13.1.2): W/ prefixes are ignored."""
    if header is None:
        return False
    tags = _etags(header)
    if tags is None:
        return True
    plain = {e[2:] if e.startswith("W/") else e for e in etags}
    return any(t in plain for t in tags)


def _content_type(name: str) -> str:
    for suffix, ctype in _TYPES.items():
        if name.endswith(suffix):
            return ctype
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range (RFC 9110 §14.1.2) as [start, end), "unsatisfiable", or None to ignore the
    header (unparsable, or several ranges: answered with the whole file, as RFC 9110 §14.2 allows)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec or len(spec) > 40:
        return None
    first, _, last = spec.strip().partition("-")
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == "") or (first == last == ""):
        return None
    if first == "":
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None  # RFC 9110 §14.1.1: an invalid range-spec; the header is ignored
    if start >= size:
        return "unsatisfiable"
    return start, end


@dataclass(frozen=True)
class _Request:
    method: str
    path: str        # the URL path as sent (percent-encoded)
    query: str
    params: dict[str, str]
    headers: Mapping[str, str]


def car_stream(reader: DagReader, resolved: Resolved, sel: CarSelection) -> Iterator[bytes]:
    """A CARv1 (https://ipld.io/specs/transport/car/carv1/), header then one section per block, streamed."""
    yield car.header([resolved.node.cid])
    for cid, block in blocks(reader, resolved, sel):
        yield car.section(cid, block)


def respond(reader: DagReader, method: str, target: str, headers: Mapping[str, str],
            snapshots: Callable[[], list[str]] | None = None) -> Answer:
    """The answer to one request; ``headers`` keys are lower case. Errors become 4xx/5xx answers."""
    try:
        return _respond(reader, method, target, headers, snapshots or list)
    except _NotAcceptable as e:
        return _error(406, f"no acceptable response: {e}")
    except BadRequest as e:
        return _error(400, str(e))
    except NotFound as e:
        return _error(404, str(e))
    except IntegrityError as e:
        return _error(500, f"refusing to serve a corrupt block: {e}")
    except StoreError as e:
        return _error(500, str(e))


def _respond(reader: DagReader, method: str, target: str, headers: Mapping[str, str],
             snapshots: Callable[[], list[str]]) -> Answer:
    if method not in ("GET", "HEAD"):
        a = _error(405, f"method {method[:16]!r} is not allowed (GET, HEAD)")
        a.headers.append(("Allow", "GET, HEAD"))
        return a
    parsed = urllib.parse.urlsplit(target)
    try:
        params = {k: v for k, v in urllib.parse.parse_qsl(parsed.query, errors="strict", max_num_fields=32)}
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"query string is not valid: {e}") from None
    req = _Request(method, parsed.path, parsed.query, params, headers)
    if parsed.path in ("/", ""):
        items = "".join(f'<li><a href="/ipfs/{r}/">{r}</a></li>' for r in snapshots())
        body = (f"<!DOCTYPE html><html><head><title>Wheelproof gateway</title></head><body>"
                f"<h1>Snapshots in this store</h1><ul>{items}</ul></body></html>").encode()
        return Answer(200, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", NO_CACHE)],
                      body, len(body))
    raw_segments = parsed.path.split("/")
    if len(raw_segments) < 3 or raw_segments[1] != "ipfs" or not raw_segments[2]:
        raise NotFound("paths are /ipfs/<cid>/…")
    # path gateway spec, "Service-Worker": registering one on a path shared by every CID is refused
    if headers.get("service-worker", "").strip().lower() == "script":
        return (_error(400, "navigator.serviceWorker: registration is not allowed on a path gateway"))
    if raw_segments[2] == PROBE_CID:
        # the empty identity block: answered without any store (the gateway's liveness probe)
        return (Answer(200, [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Cache-Control", IMMUTABLE), ("ETag", f'"{PROBE_CID}"')], b"", 0))
    try:
        root = CID.parse(raw_segments[2])
    except CIDError as e:
        raise BadRequest(f"invalid CID {raw_segments[2][:100]!r}: {e}") from None
    segments = []
    for raw in raw_segments[3:]:
        try:
            seg = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(f"path segment {raw[:100]!r} is not valid percent-encoded UTF-8") from None
        if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
            raise BadRequest(f"path segment {raw[:100]!r} is not allowed")
        if seg:
            segments.append(seg)
    fmt, car_params, content_location = _format(req)
    if fmt == "car":
        sel = _car_selection(req, car_params)
    resolved = reader.resolve_path(root, segments)
    common = [("X-Ipfs-Path", urllib.parse.unquote(parsed.path)),
              ("X-Ipfs-Roots", ",".join(str(c) for c in resolved.roots))]
    if content_location:
        common.append(("Content-Location", content_location))
    node = resolved.node
    if fmt == "raw":
        raw_block = reader.block(node)
        return _conditional(req, Answer(200, common + [
            ("Content-Type", IPLD_RAW), ("ETag", f'"{node.cid}.raw"'), ("Cache-Control", IMMUTABLE),
            ("Content-Disposition", f'attachment; filename="{node.cid}.bin"'),
            ("X-Content-Type-Options", "nosniff"), ("Vary", "Accept")], b"" if method == "HEAD" else raw_block,
            len(raw_block)))
    if fmt == "car":
        key = f"{root}{parsed.path}|{sel.scope}|{sel.entity_bytes}|{sel.dups}".encode()
        etag = f'"{node.cid}.car.{hashlib.sha256(key).hexdigest()[:16]}"'
        ctype = f"{IPLD_CAR}; version=1; order=dfs; dups={'y' if sel.dups else 'n'}"
        if sel.entity_bytes is not None and not node.is_dir:
            sel.entity_bytes.resolve(reader.size(node))  # 400 up front if entirely outside the file
        return _conditional(req, Answer(200, common + [
            ("Content-Type", ctype), ("ETag", etag), ("Cache-Control", IMMUTABLE),
            ("Content-Disposition", f'attachment; filename="{node.cid}.car"'),
            ("X-Content-Type-Options", "nosniff"), ("Accept-Ranges", "none"), ("Vary", "Accept")],
            car_stream(reader, resolved, sel), None))
    if node.is_dir:
        if not parsed.path.endswith("/"):
            location = parsed.path + "/" + (f"?{parsed.query}" if parsed.query else "")
            return Answer(301, common + [("Location", location), ("Cache-Control", IMMUTABLE)], b"", 0)
        return _directory(reader, req, node, common)
    name = segments[-1] if segments else ""
    return _file(reader, req, node, _content_type(name), common, accept_ranges=True)


def _format(req: _Request) -> tuple[str, dict[str, str], str | None]:
    """``format`` (query, takes precedence) or the Accept header: "raw", "car" or "" (deserialized);
    the CAR parameters asked for; the Content-Location to send when Accept alone chose raw/CAR."""
    fmt = req.params.get("format", "")
    if fmt:
        if fmt not in ("raw", "car"):
            raise BadRequest(f"unsupported format {fmt[:32]!r} (raw or car)")
        return fmt, {}, None
    entries = sorted(_accept_entries(req.headers.get("accept")), key=lambda e: -e[1])
    unsupported: list[str] = []
    chosen, params = "", {}
    for mtype, q, p in entries:
        if q <= 0:
            continue
        if mtype == IPLD_RAW:
            chosen = "raw"
            break
        if mtype == IPLD_CAR:
            problem = _car_problem(p)
            if problem is None:
                chosen, params = "car", p
                break
            unsupported.append(problem)
            continue
        break  # a deserialized type is preferred
    if not chosen:
        if unsupported and all(t in (IPLD_CAR, IPLD_RAW) for t, q, _ in entries if q > 0):
            raise _NotAcceptable("; ".join(unsupported))
        return "", {}, None
    query = req.query + ("&" if req.query else "") + f"format={chosen}"
    return chosen, params, f"{req.path}?{query}"


class _NotAcceptable(BadRequest):
    pass


def _car_problem(params: Mapping[str, str]) -> str | None:
    if params.get("version", "1") != "1":
        return f"CAR version={params['version'][:8]} (this gateway writes version=1)"
    if params.get("order", "dfs") not in ("dfs", "unk", ""):
        return f"CAR order={params['order'][:8]} (dfs or unk)"
    if params.get("dups", "n") not in ("y", "n"):
        return f"CAR dups={params['dups'][:8]} (y or n)"
    return None


def _car_selection(req: _Request, accept_params: dict[str, str]) -> CarSelection:
    merged = dict(accept_params)
    for key in ("version", "order", "dups"):  # query parameters take precedence over Accept's
        if f"car-{key}" in req.params:
            merged[key] = req.params[f"car-{key}"]
    if problem := _car_problem(merged):
        raise BadRequest(f"unsupported {problem}")
    scope = req.params.get("dag-scope", "all")
    if scope not in SCOPES:
        raise BadRequest(f"dag-scope={scope[:32]!r} (block, entity or all)")
    rng = parse_entity_bytes(req.params["entity-bytes"]) if "entity-bytes" in req.params else None
    return CarSelection("entity" if rng is not None and scope == "all" else scope, rng, merged.get("dups") == "y")


def _conditional(req: _Request, a: Answer, *also: str) -> Answer:
    """RFC 9110 §13.1.2 If-None-Match (weak comparison, lists, ``*``): 304 with the cache headers."""
    etag = next((v for k, v in a.headers if k == "ETag"), None)
    if etag is not None and _matches(req.headers.get("if-none-match"), [etag, *also]):
        keep = {"ETag", "Cache-Control", "X-Ipfs-Path", "X-Ipfs-Roots", "Vary", "Content-Location"}
        return Answer(304, [(k, v) for k, v in a.headers if k in keep], b"", 0)
    return a


def _directory(reader: DagReader, req: _Request, node: Node, common: list[tuple[str, str]]) -> Answer:
    index_html, index_json = reader.lookup(node, "index.html"), reader.lookup(node, JSON_INDEX)
    if index_html is not None and index_json is not None:
        offered = ["text/html", PEP691_HTML, PEP691_JSON]
        chosen = negotiate(req.headers.get("accept"), offered)
        if chosen is None:
            a = _error(406, f"acceptable types: {', '.join(offered)}")
            a.headers.append(("Vary", "Accept"))
            return a
        target = index_json if chosen == PEP691_JSON else index_html
        ctype = chosen if chosen != "text/html" else "text/html; charset=utf-8"
        return _file(reader, req, reader.node(target), ctype, common, accept_ranges=False, vary=True)
    if index_html is not None:
        return _file(reader, req, reader.node(index_html), "text/html; charset=utf-8", common, accept_ranges=False)
    rows = [f'<a href="{html.escape(urllib.parse.quote(n))}">{html.escape(n)}</a> {link.tsize or 0}<br>'
            for n, link in sorted(reader.entries(node), key=lambda e: e[0])]
    path = urllib.parse.unquote(req.path)
    buf = io.StringIO()
    buf.write(f"<!DOCTYPE html><html><head><title>{html.escape(path)}</title></head><body>"
              f"<h1>Index of {html.escape(path)}</h1>{''.join(rows)}</body></html>")
    body = buf.getvalue().encode()
    return _conditional(req, Answer(200, common + [
        ("Content-Type", "text/html; charset=utf-8"), ("ETag", f'"DirIndex-{node.cid}"'),
        ("Cache-Control", IMMUTABLE), ("X-Content-Type-Options", "nosniff"), ("Vary", "Accept")], body, len(body)))


def _file(reader: DagReader, req: _Request, node: Node, ctype: str, common: list[tuple[str, str]],
          accept_ranges: bool, vary: bool = False) -> Answer:
    size = reader.size(node)
    etag = f'"{node.cid}"'
    headers = common + [("Content-Type", ctype), ("ETag", etag), ("Cache-Control", IMMUTABLE)]
    if accept_ranges:
        headers.append(("Accept-Ranges", "bytes"))
    if vary:
        headers.append(("Vary", "Accept"))
    full = Answer(200, headers, b"", size)
    conditional = _conditional(req, full)
    if conditional.status == 304:
        return conditional
    start, end = 0, size
    rng = req.headers.get("range") if accept_ranges else None
    if rng:
        parsed = _parse_range(rng, size)
        if parsed == "unsatisfiable":
            return Answer(416, common + [("Content-Range", f"bytes */{size}"), ("Cache-Control", IMMUTABLE)],
                          b"", 0)
        if isinstance(parsed, tuple):
            start, end = parsed
            # a part is not the representation: its own entity tag (path gateway spec, ETag)
            headers = [(k, v if k != "ETag" else f'"{node.cid}.{start}-{end - 1}"') for k, v in headers]
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
            return Answer(206, headers, _body(reader, node, start, end, req.method), end - start)
    full.body = _body(reader, node, start, end, req.method)
    return full


def _body(reader: DagReader, node: Node, start: int, end: int, method: str) -> bytes | Iterator[Chunk]:
    if method == "HEAD":
        return b""
    if node.unixfs is None and node.file is None:
        return node.block[start:end]  # a small raw block, already read and verified
    if node.pb is not None and not node.pb.links:
        return b"".join(reader.read(node, start, end))  # data inline in the node
    return reader.spans(node, start, end)
