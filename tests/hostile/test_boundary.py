"""What crosses the boundary: files a hostile build leaves in /out are refused with a clear reason."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from pipeline.realise.boundary import BoundaryError, builder_result, check_source_tree, take_wheel
from pipeline.realise.rebuild import build
from pipeline.wheel.compare import compare_wheels
from pipeline.wheel.zipcheck import ZipCaps, ZipCheckError, check_wheel_zip
from tests.conftest import needs_bwrap

# The backend writes its wheel, then this replaces it with what each attack leaves in /out.
REPLACE_WHEEL = """
import os, zipfile
_Orig = zipfile.ZipFile
class _Evil(_Orig):
    def close(self):
        super().close()
        if isinstance(self.filename, str) and self.filename.endswith(".whl") and self.mode == "w":
            path = self.filename
            {body}
zipfile.ZipFile = _Evil
"""


def hostile_build(world, body: str) -> dict:
    hook = REPLACE_WHEEL.format(body=body.replace("\n", "\n            "))
    decl = world.declare_tiny(hook=hook)
    return build(decl, world.store, log=lambda m: None)


def store_holds(world, secret: bytes) -> bool:
    return any(secret in p.read_bytes() for p in world.store_root.rglob("*") if p.is_file())


@pytest.mark.integration
@needs_bwrap
def test_symlink_in_out_is_not_followed(world):
    key = world.root / "release.key"
    key.write_text("untrusted comment: minisign secret key\nSECRET-KEY-BYTES-0123456789\n")
    record = hostile_build(world, f"os.unlink(path)\nos.symlink({str(key)!r}, path)")
    assert record.verdict == "failed"
    assert record.error == ("wheelproof: rejected: out/tiny-1.0-py3-none-any.whl: refused (a symbolic link); "
                               "the host takes only regular files")
    assert not store_holds(world, b"SECRET-KEY-BYTES-0123456789")


@pytest.mark.integration
@needs_bwrap
def test_hardlink_to_an_input_is_refused_by_the_kernel(world):
    record = hostile_build(world, "os.unlink(path)\nos.link('/inputs/sdist/tiny-1.0.tar.gz', path)")
    log = world.store.read_compressed(record.log.sha256).decode()
    assert record.verdict == "failed" and "OSError: [Errno 18] Invalid cross-device link" in log


@pytest.mark.integration
@needs_bwrap
def test_fifo_in_out_does_not_hang_the_host(world):
    started = time.monotonic()
    record = hostile_build(world, "os.unlink(path)\nos.mkfifo(path)")
    assert record.verdict == "failed" and "is not a regular file (mode prw" in record.error
    assert time.monotonic() - started < 60


@pytest.mark.integration
@needs_bwrap
def test_a_wheel_that_is_not_a_zip(world):
    record = hostile_build(world, "open(path, 'wb').write(b'not a zip at all')")
    assert record.verdict == "failed"
    assert record.error.startswith("wheelproof: rejected: out/tiny-1.0-py3-none-any.whl: not a zip archive")
    assert "Traceback" not in record.log_tail.split("wheelproof: rejected")[-1]


@pytest.mark.integration
@needs_bwrap
def test_a_zip_with_a_lying_local_header(world):
    body = ("data = bytearray(open(path, 'rb').read())\n"
            "name = b'tiny.py'\n"
            "i = data.index(b'PK\\x03\\x04' + data[4:26]) + 30\n"
            "assert data[i:i + len(name)] == name, data[i:i + 40]\n"
            "data[i:i + len(name)] = b'evil.py'\n"
            "open(path, 'wb').write(data)")
    record = hostile_build(world, body)
    assert record.verdict == "failed"
    assert "member 'tiny.py': its local header names 'evil.py'" in record.error


# -- the checks themselves, without a sandbox -------------------------------------------------------

def make_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("members,message", [
    ([("a.py", b"1"), ("a.py", b"2")], "member 'a.py' appears twice"),
    ([("/etc/passwd", b"x")], "member name '/etc/passwd' is absolute or climbs out with '..'"),
    ([("pkg/../../x", b"x")], "member name 'pkg/../../x' is absolute or climbs out with '..'"),
    ([("bomb.bin", bytes(64 << 20))], "member 'bomb.bin' compresses more than 200:1"),
])
def test_zip_check_refuses(tmp_path, members, message):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        path = make_zip(tmp_path / "x-1.0-py3-none-any.whl", members)
    with pytest.raises(ZipCheckError, match="x-1.0-py3-none-any.whl: " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        check_wheel_zip(path)


def test_zip_check_caps_the_unpacked_total(tmp_path):
    path = make_zip(tmp_path / "x-1.0-py3-none-any.whl", [("a", os.urandom(1 << 20)), ("b", os.urandom(1 << 20))])
    with pytest.raises(ZipCheckError, match="declare over 1500000 bytes uncompressed"):
        check_wheel_zip(path, ZipCaps(unpacked=1_500_000))
    check_wheel_zip(path)  # and within the default caps it is fine


def test_hardlinked_and_oversized_outputs_are_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.whl"
    make_zip(secret, [("a", b"1")])
    os.link(secret, out / "x-1.0-py3-none-any.whl")
    with pytest.raises(BoundaryError, match="has 2 hard links"):
        take_wheel(out, "x-1.0-py3-none-any.whl", tmp_path / "taken", 1 << 20, ZipCaps())
    (out / "y-1.0-py3-none-any.whl").write_bytes(b"x" * 2000)
    with pytest.raises(BoundaryError, match="is 2000 bytes, over the cap of 1000"):
        take_wheel(out, "y-1.0-py3-none-any.whl", tmp_path / "taken", 1000, ZipCaps())
    assert not (tmp_path / "taken").exists() or not list((tmp_path / "taken").iterdir())


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "", 7, "notawheel.txt"])
def test_wheel_names_from_the_sandbox_are_single_components(tmp_path, name):
    with pytest.raises(BoundaryError):
        take_wheel(tmp_path, name, tmp_path / "taken", 1 << 20, ZipCaps())


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"wheel": 5}', "field 'wheel' should be str, got int"),
    ('{"counts": {"tests": "many"}}', "field 'counts' should map names to numbers"),
    ('{"top": "../../.."}', "is not a plain file name"),
    ('{"failed_ids": [1]}', "field 'failed_ids' should be a list of strings"),
])
def test_result_json_is_validated(tmp_path, content, message):
    (tmp_path / "wheel.json").write_text(content)
    with pytest.raises(BoundaryError, match=message.replace("[", r"\[").replace("(", r"\(")):
        builder_result(tmp_path, "wheel.json", 1 << 20)


def test_result_json_symlink_is_refused(tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps({"phase": "wheel"}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "wheel.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(BoundaryError, match="refused \\(a symbolic link\\)"):
        builder_result(tmp_path / "out", "wheel.json", 1 << 20)


def test_source_tree_symlink_is_refused(tmp_path):
    (tmp_path / "extract").mkdir()
    (tmp_path / "extract" / "top").symlink_to("/")
    with pytest.raises(BoundaryError, match="not a directory"):
        check_source_tree(tmp_path / "extract", "top")


def test_host_side_diff_is_bounded(tmp_path):
    big_a = "".join(f"line {i}\n" for i in range(200_000)).encode()
    big_b = "".join(f"line {i * 7}\n" for i in range(200_000)).encode()
    mid_a = "".join(f"a {i}\n" for i in range(4_000)).encode()
    mid_b = "".join(f"b {i}\n" for i in range(4_000)).encode()
    huge = os.urandom(9 << 20)
    up = make_zip(tmp_path / "up.whl", [("big.txt", big_a), ("mid.txt", mid_a), ("huge.bin", huge)])
    re = make_zip(tmp_path / "re.whl", [("big.txt", big_b), ("mid.txt", mid_b), ("huge.bin", huge[::-1])])
    started = time.monotonic()
    c = compare_wheels(up, re)
    assert time.monotonic() - started < 15
    assert c.verdict == "differs" and c.content_differs == ["big.txt", "huge.bin", "mid.txt"]
    assert f"Text member big.txt differs ({len(big_a)} vs {len(big_b)} bytes; too large to diff)" in c.diff
    assert f"Large member huge.bin differs by SHA-256 ({9 << 20} vs {9 << 20} bytes; not diffed)" in c.diff
    assert "[diff cut: line limit]" in c.diff
