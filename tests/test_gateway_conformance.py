"""The gateway against the IPFS path and trustless gateway specs and RFC 9110, on both servers.

Each case names the clause it checks: PG = https://specs.ipfs.tech/http-gateways/path-gateway/,
TG = https://specs.ipfs.tech/http-gateways/trustless-gateway/, IPIP-402 (partial CARs), IPIP-412
(CAR content type parameters), RFC 9110 (HTTP semantics).
"""

from __future__ import annotations

import hashlib
import http.client
import os

import pytest

from pipeline.export.ipfs import car, dagpb
from pipeline.export.ipfs.blocks import VerifiedBlocks
from pipeline.export.ipfs.dag import DagReader
from pipeline.export.ipfs.multiformats import DAG_PB, RAW
from pipeline.export.ipfs.unixfs import V1_2025, Importer
from pipeline.store.local import Store

from .gatewayservers import KINDS, running

BIG = os.urandom(3 * (1 << 20) + 12345)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("conformance") / "store")
    imp = Importer(V1_2025, lambda c, b: store.put_bytes(b))
    shard = {f"f{i:05d}": b"same\n" for i in range(6000)}  # one leaf block: a quick import, still a HAMT
    entry = imp.tree({"index.html": b"<p>root</p>", "docs": {"a.txt": b"hello\n", "b.txt": b"hello\n"},
                      "big.bin": BIG, "shard": shard, "empty": {}})
    return store, entry.cid


@pytest.fixture(params=KINDS)
def gw(request, tree):
    store, root = tree
    with running(request.param, store) as port:
        yield port, root, store


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def car_blocks(body: bytes):
    roots, blocks = car.read(body)
    return roots, list(blocks)  # every block verified against its CID


def test_path_car_starts_with_pathing_blocks(gw):
    """TG "CAR Responses" + IPIP-402: the blocks to verify each path segment come first, root first."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/docs/a.txt?format=car")
    roots, blocks = car_blocks(body)
    assert response.status == 200
    assert [c for c, _ in blocks][0] == root
    assert blocks[-1][0] == roots[0] and roots[0].codec == RAW
    assert dagpb.UnixFSData.decode(dagpb.decode(blocks[1][1]).data or b"").type == dagpb.DIRECTORY


def test_path_car_through_a_hamt_carries_the_shards(gw):
    """TG "CAR Responses": a HAMT-sharded directory's shards on the way are pathing blocks too."""
    port, root, _ = gw
    _, body = get(port, f"/ipfs/{root}/shard/f04321?format=car&dag-scope=block")
    _, blocks = car_blocks(body)
    types = [dagpb.UnixFSData.decode(dagpb.decode(b).data or b"").type for c, b in blocks if c.codec == DAG_PB]
    assert types[0] == dagpb.DIRECTORY and types[1:].count(dagpb.HAMT_SHARD) >= 2
    assert blocks[-1][1] == b"same\n"


@pytest.mark.parametrize("scope,expect", [("block", 2), ("entity", 2), ("all", 2 + 1)])
def test_dag_scope(gw, scope, expect):
    """TG "dag-scope": block = target block; entity = a directory's own block; all = the whole DAG.
    (docs/ has two files with the same bytes: ``all`` sends that leaf once, dups=n.)"""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/docs?format=car&dag-scope={scope}")
    _, blocks = car_blocks(body)
    assert response.status == 200 and len(blocks) == expect


def test_dag_scope_entity_of_a_file_is_the_whole_file(gw):
    port, root, _ = gw
    _, body = get(port, f"/ipfs/{root}/big.bin?format=car&dag-scope=entity")
    _, blocks = car_blocks(body)
    assert b"".join(b for c, b in blocks if c.codec == RAW) == BIG


@pytest.mark.parametrize("rng,leaves", [("0:99", [0]), ("1048576:1048577", [1]), ("-10:*", [3]),
                                        ("0:*", [0, 1, 2, 3]), ("1048575:1048576", [0, 1])])
def test_entity_bytes_sends_only_the_blocks_of_the_range(gw, rng, leaves):
    """TG "entity-bytes": only the minimal set of blocks needed to verify the byte range (negative from
    counts from the end, * is end of file)."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/big.bin?format=car&entity-bytes={rng}")
    _, blocks = car_blocks(body)
    raw = [b for c, b in blocks if c.codec == RAW]
    chunks = [BIG[i << 20:(i + 1) << 20] for i in range(4)]
    assert response.status == 200 and raw == [chunks[i] for i in leaves]


def test_entity_bytes_outside_the_file_is_a_400(gw):
    """TG "entity-bytes": 400 when the range is entirely outside the entity and that is known up front."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/big.bin?format=car&entity-bytes={len(BIG) + 5}:*")
    assert response.status == 400 and b"past the end" in body


def test_car_content_type_parameters(gw):
    """TG "Content-Type": version=1 (MUST), order and dups (SHOULD, IPIP-412)."""
    port, root, _ = gw
    response, _ = get(port, f"/ipfs/{root}/docs/?format=car")
    assert response.getheader("Content-Type") == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert response.getheader("Content-Disposition") == f'attachment; filename="{car_blocks(_)[0][0]}.car"'


def test_car_dups_y_repeats_duplicate_blocks(gw):
    """TG "CAR dups": dups=y sends a block every time the walk meets it."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/docs?format=car&car-dups=y")
    _, blocks = car_blocks(body)
    assert response.getheader("Content-Type").endswith("dups=y")
    assert [b for _, b in blocks].count(b"hello\n") == 2
    response, body = get(port, f"/ipfs/{root}/docs", {"Accept": "application/vnd.ipld.car; dups=y"})
    assert [b for _, b in car_blocks(body)[1]].count(b"hello\n") == 2


@pytest.mark.parametrize("query,status", [("car-version=2", 400), ("car-order=weird", 400), ("car-dups=maybe", 400),
                                          ("format=dag-json", 400), ("dag-scope=subtree", 400)])
def test_variants_we_do_not_serve_are_400(gw, query, status):
    """TG "car-version"/"car-order"/"car-dups"/"dag-scope": never silently answered with something else."""
    port, root, _ = gw
    response, _ = get(port, f"/ipfs/{root}/docs?format=car&{query}" if "format" not in query
                      else f"/ipfs/{root}/docs?{query}")
    assert response.status == status


def test_accept_with_only_unsupported_car_variants_is_406(gw):
    """RFC 9110 §15.5.7 / TG "Accept": an Accept we cannot satisfy gets 406, not another format."""
    port, root, _ = gw
    response, _ = get(port, f"/ipfs/{root}/docs", {"Accept": "application/vnd.ipld.car; version=2"})
    assert response.status == 406
    response, _ = get(port, f"/ipfs/{root}/docs",
                      {"Accept": "application/vnd.ipld.car; version=2, application/vnd.ipld.car; version=1"})
    assert response.status == 200


def test_x_ipfs_roots_names_every_segment(gw):
    """PG "X-Ipfs-Roots": the CID of the root and of each path segment; "X-Ipfs-Path": the path."""
    port, root, store = gw
    response, _ = get(port, f"/ipfs/{root}/docs/a.txt")
    roots = response.getheader("X-Ipfs-Roots").split(",")
    reader = DagReader(store)
    docs = reader.lookup(reader.node(root), "docs")
    assert roots == [str(root), str(docs), str(reader.lookup(reader.node(docs), "a.txt"))]
    assert response.getheader("X-Ipfs-Path") == f"/ipfs/{root}/docs/a.txt"


@pytest.mark.parametrize("tag", ["{etag}", 'W/{etag}', '"other", {etag}', "*", '"x",   W/{etag} , "y"'])
def test_if_none_match_lists_star_and_weak_tags(gw, tag):
    """RFC 9110 §13.1.2: a list, ``*``, weak comparison; 304 carries ETag and Cache-Control (PG)."""
    port, root, _ = gw
    response, _ = get(port, f"/ipfs/{root}/docs/a.txt")
    etag = response.getheader("ETag")
    response, body = get(port, f"/ipfs/{root}/docs/a.txt", {"If-None-Match": tag.format(etag=etag)})
    assert response.status == 304 and body == b""
    assert response.getheader("ETag") == etag and "immutable" in response.getheader("Cache-Control")
    response, _ = get(port, f"/ipfs/{root}/docs/a.txt", {"If-None-Match": '"other", W/"another"'})
    assert response.status == 200


def test_probe_cid(gw):
    """PG "Dedicated probe paths": /ipfs/bafkqaaa (the empty identity CID) answers 200."""
    port, _, _ = gw
    for method in ("HEAD", "GET"):
        response, body = get(port, "/ipfs/bafkqaaa", method=method)
        assert response.status == 200 and body == b""


def test_content_location_when_accept_chose_the_format(gw):
    """TG "Content-Location": returned when Accept (not ``format``) chose raw or CAR."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/docs/a.txt", {"Accept": "application/vnd.ipld.raw"})
    assert response.getheader("Content-Location") == f"/ipfs/{root}/docs/a.txt?format=raw" and body == b"hello\n"
    response, _ = get(port, f"/ipfs/{root}/docs?x=1", {"Accept": "application/vnd.ipld.car"})
    assert response.getheader("Content-Location") == f"/ipfs/{root}/docs?x=1&format=car"
    response, _ = get(port, f"/ipfs/{root}/docs?format=car")
    assert response.getheader("Content-Location") is None


def test_range_answers_have_their_own_etag(gw):
    """PG "ETag" / RFC 9110 §14: a 206 part is not the representation; its tag differs."""
    port, root, _ = gw
    full, _ = get(port, f"/ipfs/{root}/big.bin", method="HEAD")
    part, body = get(port, f"/ipfs/{root}/big.bin", {"Range": "bytes=10-19"})
    assert part.status == 206 and body == BIG[10:20]
    assert part.getheader("ETag") not in (None, full.getheader("ETag"))
    assert part.getheader("Content-Range") == f"bytes 10-19/{len(BIG)}"


def test_cache_control_on_redirects_and_304s(gw):
    """PG "Cache-Control": every /ipfs/ answer, the 301 to the trailing slash included."""
    port, root, _ = gw
    response, _ = get(port, f"/ipfs/{root}/docs?a=b")
    assert response.status == 301 and response.getheader("Location") == f"/ipfs/{root}/docs/?a=b"
    assert "immutable" in response.getheader("Cache-Control")
    response, _ = get(port, f"/ipfs/{root}/nope")
    assert response.status == 404 and response.getheader("Cache-Control")


def test_service_worker_script_is_refused_not_redirected(gw):
    """PG "Service-Worker": registration on a path gateway is refused (400), never a 301."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/docs", {"Service-Worker": "script"})
    assert response.status == 400 and b"serviceWorker" in body


def test_car_is_streamed_without_content_length(gw):
    """TG "Streaming": the CAR goes out block by block (chunked), never built in memory first."""
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/?format=car")
    assert response.getheader("Content-Length") is None and response.getheader("Transfer-Encoding") == "chunked"
    _, blocks = car_blocks(body)
    assert blocks[0][0] == root


def test_whole_files_stream_with_their_length(gw):
    port, root, _ = gw
    response, body = get(port, f"/ipfs/{root}/big.bin")
    assert response.getheader("Content-Length") == str(len(BIG)) and body == BIG
    assert response.getheader("ETag") == f'"{response.getheader("X-Ipfs-Roots").split(",")[-1]}"'


def test_a_block_is_verified_once(tree):
    """Blocks are immutable: VerifiedBlocks hashes each once, then serves it from memory or its file."""
    store, root = tree
    blocks = VerifiedBlocks(store)
    reader = DagReader(blocks)
    node = reader.resolve(root, ["big.bin"])
    assert b"".join(reader.read(node, 0, reader.size(node))) == BIG
    first = blocks.hashed
    assert b"".join(reader.read(reader.resolve(root, ["big.bin"]), 0, len(BIG))) == BIG
    assert blocks.hashed == first and first >= 5
    assert hashlib.sha256(BIG).digest()  # the bytes served twice are the imported ones (checked above)
