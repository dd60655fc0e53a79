"""RFC 6962 Merkle proofs on trees of every size 1..64, and the C2SP tile layout."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.trust import tlog


def leaves(n: int) -> list[bytes]:
    return [tlog.leaf_hash(f"entry {i}".encode()) for i in range(n)]


def reference_root(d: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 §2.1 defines it (recursive split at the largest power of two < n)."""
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return tlog.node_hash(reference_root(d[:k]), reference_root(d[k:]))


def test_hashes_are_domain_separated():
    assert tlog.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert tlog.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert tlog.root([]) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(1, 65))
def test_inclusion_every_index(n):
    d = leaves(n)
    r = tlog.root(d)
    assert r == reference_root(d)
    for i in range(n):
        proof = tlog.inclusion_proof(i, d)
        assert tlog.verify_inclusion(i, n, d[i], proof, r)
        assert not tlog.verify_inclusion(i, n, tlog.leaf_hash(b"other"), proof, r)
        if proof:
            bad = list(proof)
            bad[0] = hashlib.sha256(bad[0]).digest()
            assert not tlog.verify_inclusion(i, n, d[i], bad, r)
        if n > 1:
            assert not tlog.verify_inclusion((i + 1) % n, n, d[i], proof, r) or d[i] == d[(i + 1) % n]


@pytest.mark.parametrize("n", range(1, 65))
def test_consistency_every_pair(n):
    d = leaves(n)
    new = tlog.root(d)
    for m in range(1, n + 1):
        old = tlog.root(d[:m])
        proof = tlog.consistency_proof(m, d)
        assert tlog.verify_consistency(m, n, old, new, proof), (m, n)
        assert not tlog.verify_consistency(m, n, hashlib.sha256(old).digest(), new, proof)
        if m < n:
            # a log that rewrote an old entry is not consistent with the old root
            rewritten = d[:m - 1] + [tlog.leaf_hash(b"rewritten")] + d[m:]
            assert not tlog.verify_consistency(m, n, old, tlog.root(rewritten),
                                               tlog.consistency_proof(m, rewritten))


def test_tile_paths():
    assert tlog.tile_index_path(5) == "005"
    assert tlog.tile_index_path(1234067) == "x001/x234/067"
    assert tlog.tile_path(0, 1, 17) == "tile/0/001.p/17"
    assert tlog.tile_path("entries", 0, 256) == "tile/entries/000"


def test_tiles_round_trip(tmp_path):
    entries = [f"entry {i}".encode() for i in range(600)]
    r = tlog.write_tiles(tmp_path, entries)
    assert r == tlog.root([tlog.leaf_hash(e) for e in entries])
    assert (tmp_path / "tile/0/000").stat().st_size == 256 * 32
    assert (tmp_path / "tile/0/002.p/88").stat().st_size == 88 * 32
    assert (tmp_path / "tile/1/000.p/2").read_bytes()[:32] == tlog.root([tlog.leaf_hash(e) for e in entries[:256]])
    assert tlog.read_entries(tmp_path, 600) == entries
    assert tlog.read_entries(tmp_path, 300) == entries[:300]
