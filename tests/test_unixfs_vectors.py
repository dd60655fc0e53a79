"""Every CID in ../shared/vectors/unixfs.json (computed by ipfs-unixfs-importer) is a test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.export.ipfs.unixfs import PROFILES, cid_of_file, cid_of_tree

VECTORS = Path(__file__).resolve().parent / "vectors" / "unixfs.json"
DOC = json.loads(VECTORS.read_text())


def lcg(seed: int, n: int) -> bytes:
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) % 2**32
        out[i] = x >> 24
    return bytes(out)


def content(expr: str) -> bytes:
    if expr == "empty":
        return b""
    if m := re.fullmatch(r"a\*(\d+)", expr):
        return b"a" * int(m.group(1))
    if m := re.fullmatch(r"lcg\(seed=(\d+)\)\*(\d+)", expr):
        return lcg(int(m.group(1)), int(m.group(2)))
    return expr.encode().decode("unicode_escape").encode()


def directory(expr: str) -> dict:
    if expr.startswith("{file-%05d.txt"):
        return {f"file-{i:05d}.txt": f"file {i}\n".encode() for i in range(10000)}
    out: dict = {}
    body = expr[1:-1]
    for m in re.finditer(r'(\w+\.txt):"((?:[^"\\]|\\.)*)"|(\w+)/(\{[^}]*\})', body):
        if m.group(1):
            out[m.group(1)] = m.group(2).encode().decode("unicode_escape").encode()
        else:
            out[m.group(3)] = directory(m.group(4))
    return out


CASES = [(key, profile, cid) for key, by_profile in DOC["cids"].items() for profile, cid in by_profile.items()]


@pytest.mark.parametrize("key,profile,expected", CASES, ids=[f"{k}-{p}" for k, p, _ in CASES])
def test_vector(key, profile, expected):
    kind, expr = key.split(":", 1)
    if kind == "file":
        actual = cid_of_file(content(expr), PROFILES[profile])
    else:
        actual = cid_of_tree(directory(expr), PROFILES[profile])
    assert str(actual) == expected


def test_empty_directory_both_profiles():
    v0, v1 = DOC["extra_known"]["empty directory (both v0 and as CIDv1 dag-pb)"]
    assert str(cid_of_tree({}, PROFILES["unixfs-v0-2015"])) == v0
    assert str(cid_of_tree({}, PROFILES["unixfs-v1-2025"])) == v1
