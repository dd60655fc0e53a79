"""Sharpened verdicts (issue 14): directory entries are zip metadata, executable bits and local headers
decide between equivalent and differs."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pipeline.wheel.compare import compare_wheels
from pipeline.wheel.zipcheck import local_header_problems


def wheel(path: Path, members: dict[str, tuple[bytes, int]], dirs: tuple[str, ...] = (),
          when: tuple[int, int, int, int, int, int] = (2024, 1, 1, 0, 0, 0)) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            info = zipfile.ZipInfo(d, when)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name, when)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


MEMBERS = {"pkg/__init__.py": (b"X = 1\n", 0o644), "pkg/tool.sh": (b"#!/bin/sh\n", 0o755)}


def test_directory_entries_are_zip_metadata_not_missing_members(tmp_path):
    a = wheel(tmp_path / "a.whl", MEMBERS, dirs=("pkg/",))
    b = wheel(tmp_path / "b.whl", MEMBERS)
    c = compare_wheels(a, b)
    assert c.verdict == "equivalent"
    assert c.only_upstream == [] and c.zip_metadata["directory entries"] == ["pkg/"]


def test_an_executable_bit_is_a_difference(tmp_path):
    a = wheel(tmp_path / "a.whl", MEMBERS)
    b = wheel(tmp_path / "b.whl", {**MEMBERS, "pkg/tool.sh": (b"#!/bin/sh\n", 0o644)})
    c = compare_wheels(a, b)
    assert c.verdict == "differs" and c.executable_differs == ["pkg/tool.sh"]
    assert "executable bit differs: pkg/tool.sh" in c.summary()


def test_other_permission_bits_stay_equivalent(tmp_path):
    a = wheel(tmp_path / "a.whl", MEMBERS)
    b = wheel(tmp_path / "b.whl", {**MEMBERS, "pkg/__init__.py": (b"X = 1\n", 0o664)})
    assert compare_wheels(a, b).verdict == "equivalent"


def test_a_local_header_that_disagrees_with_the_central_directory_differs(tmp_path):
    a = wheel(tmp_path / "a.whl", MEMBERS)
    b = wheel(tmp_path / "b.whl", MEMBERS, when=(2024, 1, 1, 0, 0, 2))
    data = bytearray(b.read_bytes())
    offset = data.index(b"PK\x03\x04")
    data[offset + 10:offset + 12] = (0).to_bytes(2, "little")  # the first local header's DOS time
    b.write_bytes(bytes(data))
    assert local_header_problems(b) and not local_header_problems(a)
    c = compare_wheels(a, b)
    assert c.verdict == "differs"
    assert "local headers disagree with the central directory" in c.summary()


def test_another_deflate_stream_is_named(tmp_path):
    data = {"pkg/__init__.py": (b"X = 1\n" * 200, 0o644)}
    a = wheel(tmp_path / "a.whl", data)
    b = tmp_path / "b.whl"
    with zipfile.ZipFile(a) as src, zipfile.ZipFile(b, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    c = compare_wheels(a, b)
    assert c.verdict == "equivalent" and c.zip_metadata == {"compressed size": ["pkg/__init__.py"]}
