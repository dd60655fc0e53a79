"""Hostile declarations through the entry points: `python -m pipeline validate` and doit exit 2,
name file, line and field, and write nothing: no file at a traversal target, no store object."""

from __future__ import annotations

from pathlib import Path

from pipeline.model.declaration import load_all
from pipeline.realise.declare import write

from ..conftest import REPO
from .test_declaration_rules import set_key


def _line(path: Path, marker: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line)


def _store_is_empty(world) -> bool:
    objects = world.store_root / "objects"
    return not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))


def test_sdist_traversal_overwrites_nothing(world):
    decl = world.declare_tiny()
    target = world.root / "outside" / "tiny-1.0.tar.gz"  # an absolute name joins as itself when staged
    decl.path.write_text(set_key(decl.path.read_text(), "sdist", "filename", f'"{target}"'))
    for proc in (world.cli("validate"), world.doit("build:tiny")):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{decl.path}:{_line(decl.path, str(target))}: sdist.filename: not a bare file name" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not target.exists() and not target.parent.exists()
    assert _store_is_empty(world)


def test_test_source_traversal_overwrites_nothing(world):
    decl = world.declare_tiny()
    sdist = world.dist / "tiny-1.0" / "tiny-1.0.tar.gz"
    dotdots = "../" * 12
    table = (f'\n[test]\nsource = {{ filename = "{dotdots}{world.root.relative_to("/")}/pwned.tar.gz", '
             f'url = "{world.url_of(sdist)}", sha256 = "{decl.sdist.sha256}", size = {decl.sdist.size} }}\n')
    decl.path.write_text(decl.path.read_text() + table)
    proc = world.doit("test:tiny")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{decl.path}:{_line(decl.path, 'pwned')}: test.source.filename: not a bare file name" in proc.stderr
    assert not (world.root / "pwned.tar.gz").exists() and _store_is_empty(world)


def test_file_url_is_refused_before_any_fetch(world):
    decl = world.declare_tiny()
    decl.path.write_text(set_key(decl.path.read_text(), "sdist", "url", '"file:///etc/passwd"'))
    proc = world.doit("build:tiny")
    assert proc.returncode == 2
    assert f"{decl.path}:{_line(decl.path, 'file:')}: sdist.url: only https URLs" in proc.stderr
    assert "root:" not in proc.stderr + proc.stdout and _store_is_empty(world)


def test_deep_nesting_and_huge_file_exit_2_without_traceback(world):
    decl = world.declare_tiny()
    other = world.declarations / "ot" / "other.toml"
    other.parent.mkdir()
    other.write_text("schema = 1\n" + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    big = world.declarations / "bi" / "big.toml"
    big.parent.mkdir()
    big.write_bytes(b"schema = 1\n" + b"# " + b"x" * (2 << 20) + b"\n")
    proc = world.cli("validate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{other}:2: x: arrays or inline tables nested more than 32 deep" in proc.stderr
    assert f"{big}:" in proc.stderr and "file size:" in proc.stderr
    assert str(decl.path) not in proc.stderr  # the valid one has no problem


def test_validate_accepts_the_shipped_declarations_and_toolchain():
    import subprocess
    import sys

    assert len(load_all(REPO / "declarations")) >= 31
    proc = subprocess.run([sys.executable, "-m", "pipeline", "validate"], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "WHEELPROOF_DECLARATIONS": str(REPO / "declarations")})
    assert proc.returncode == 0, proc.stderr
    assert "declarations are valid" in proc.stdout and "toolchain" in proc.stdout


def test_declare_writes_only_a_valid_declaration(world):
    from dataclasses import replace

    from pipeline.model.declaration import Artifact
    from pipeline.model.errors import DeclarationError

    decl = world.declare_tiny()
    before = decl.path.read_bytes()
    unsized = Artifact("dep-1.0-py3-none-any.whl", "https://files.example/dep-1.0-py3-none-any.whl", "a" * 64, None)
    bad = replace(decl, build=replace(decl.build, inputs=(unsized,)))
    try:
        write(bad, existing_path=decl.path)
    except DeclarationError as e:
        assert any(p.field == "build.inputs[0].size" and "missing required field" in p.message for p in e.problems)
    else:
        raise AssertionError("an unsized input was written")
    assert decl.path.read_bytes() == before
    assert [p.name for p in decl.path.parent.iterdir()] == [decl.path.name]  # no temp file left
    decl.path.unlink()
    hostile = replace(decl, sdist=replace(decl.sdist, url="file:///etc/passwd"))
    try:
        write(hostile)
    except DeclarationError as e:
        assert any(p.field == "sdist.url" and "only https URLs" in p.message for p in e.problems)
    else:
        raise AssertionError("a file: URL was written")
    assert list(decl.path.parent.iterdir()) == []


def test_declare_refuses_an_index_file_name_before_staging_it():
    from pipeline.model.errors import IndexError_
    from pipeline.realise.declare import _artifact
    from pipeline.realise.index import IndexFile

    for filename, url in (("../../x-1.0.tar.gz", "https://files.example/x-1.0.tar.gz"),
                          ("x-1.0.tar.gz", "file:///etc/passwd")):
        f = IndexFile(filename, url, "a" * 64, 10, None, False, False)
        try:
            _artifact(f)
        except IndexError_ as e:
            assert "unusable file" in str(e)
        else:
            raise AssertionError(f"{filename} {url} accepted")
