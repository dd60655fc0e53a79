"""Hostile inputs around build conditions: a declaration's [build.conditions], an sdist whose modes or
size the inference and ``modes = "sdist"`` extraction read."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.model.declaration import load, path_for
from pipeline.model.errors import DeclarationError
from pipeline.wheel import conditions as inference

from ..conftest import REPO, declaration_text

sys.path.insert(0, str(REPO / "builders"))
import build_wheel  # noqa: E402  (the program that runs inside the sandbox)


def tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            data = b"x" * info.size if info.isreg() else None
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, mode: int = 0o644, kind: bytes = tarfile.REGTYPE, linkname: str = "",
           size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.linkname = mode, kind, linkname
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


def test_keeping_the_sdists_modes_still_drops_set_id_bits(tmp_path):
    sdist = tar_with(tmp_path / "p-1.tar.gz", [member("p-1/a.py", 0o6775), member("p-1/b.py", 0o1664)])
    top = build_wheel.extract_sdist(sdist, tmp_path / "out", keep_modes=True)
    assert (top / "a.py").stat().st_mode & 0o7777 == 0o775  # group write kept, setuid/setgid gone
    assert (top / "b.py").stat().st_mode & 0o7777 == 0o664  # sticky gone


@pytest.mark.parametrize("bad", [member("p-1/link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
                                 member("p-1/../../escape.py"),
                                 member("/abs.py")])
def test_keeping_modes_does_not_weaken_the_data_filter(tmp_path, bad):
    sdist = tar_with(tmp_path / "p-1.tar.gz", [member("p-1/a.py"), bad])
    with pytest.raises((tarfile.FilterError, SystemExit)):  # refused, or an absolute name made relative
        build_wheel.extract_sdist(sdist, tmp_path / "out", keep_modes=True)
    assert not (tmp_path / "escape.py").exists() and not Path("/abs.py").exists()


def test_inference_reads_a_bounded_number_of_sdist_headers(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "MAX_SDIST_MEMBERS", 50)
    sdist = tar_with(tmp_path / "p-1.tar.gz", [member(f"p-1/m{i}.py") for i in range(500)])
    assert len(inference.read_sdist_files(sdist)) == 50


def test_a_zip_sdist_infers_nothing(tmp_path):
    (tmp_path / "p-1.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert inference.read_sdist_files(tmp_path / "p-1.zip") == []


@pytest.mark.parametrize("table,field", [
    ('clock = "now"\n[build.conditions.evidence]\nclock = "x"\n', "build.conditions.clock"),
    ('umask = "999"\n[build.conditions.evidence]\numask = "x"\n', "build.conditions.umask"),
    ('utc-offset = 100000\n[build.conditions.evidence]\nutc-offset = "x"\n', "build.conditions.utc-offset"),
    ('ld-preload = "/tmp/evil.so"\n', "build.conditions.ld-preload"),
    ('clock = 1793531978\n', "build.conditions.evidence.clock"),
    ('clock = 1793531978\nwritten = { "../../etc/ld.so.preload" = 1793531970 }\n'
     '[build.conditions.evidence]\nclock = "x"\nwritten = "x"\n', "build.conditions.written"),
    ('clock = 1793531978\nwritten = { "METADATA\\n" = 1793531970 }\n'
     '[build.conditions.evidence]\nclock = "x"\nwritten = "x"\n', "build.conditions.written"),
    ('clock = 1793531978\n[build.conditions.written]\n' + "".join(f'"f{i}" = 1793531970\n' for i in range(65))
     + '[build.conditions.evidence]\nclock = "x"\nwritten = "x"\n', "build.conditions.written"),
    ('host = "windows; rm -rf /"\n[build.conditions.evidence]\nhost = "x"\n', "build.conditions.host"),
])
def test_hostile_conditions_are_refused_naming_the_field(world, table, field):
    decl = world.declare_tiny()
    text = declaration_text("tiny", "1.0", world.dist / "tiny-1.0" / decl.sdist.filename,
                            world.dist / "tiny-1.0" / "upstream" / decl.wheels[0].filename, url_of=world.url_of,
                            extra="\n[build.conditions]\n" + table)
    path = path_for("tiny", world.declarations)
    path.write_text(text)
    with pytest.raises(DeclarationError) as e:
        load(path, world.declarations)
    assert f"{path}" in str(e.value) and field in str(e.value)


def test_the_host_hook_names_a_descriptor_it_cannot_resolve_as_nothing(tmp_path, monkeypatch):
    """The start-up hook runs inside the sandbox; a descriptor it cannot name (no /proc, or a closed
    one) gets the clock, never an exception in the backend."""
    import importlib.util

    monkeypatch.delenv("WHEELPROOF_CLOCK", raising=False)
    monkeypatch.delenv("WHEELPROOF_HOST", raising=False)
    spec = importlib.util.spec_from_file_location("build_host_hook", REPO / "builders/build_host/sitecustomize.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # without a condition in the environment it patches nothing
    assert hook._name(987654) == "" and hook._name(None) == ""
    (tmp_path / "top_level.txt").write_text("x")
    with open(tmp_path / "top_level.txt") as f:
        assert hook._name(f.fileno()) == "top_level.txt"
    assert hook._name(tmp_path / "METADATA") == "METADATA"


# -- the setuptools bound (pipeline/wheel/setuptools_era.py) reads hostile archives' metadata only ---

def _wheel(path: Path, metadata: bytes) -> Path:
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("p-1.dist-info/METADATA", metadata)
        zf.writestr("p-1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: bdist_wheel (0.37.1)\n")
    return path


@pytest.mark.parametrize("pkg_info", [member("p-1/PKG-INFO", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
                                      member("p-1/PKG-INFO", size=64)])
def test_a_linked_or_oversized_pkg_info_is_not_read(tmp_path, monkeypatch, pkg_info):
    from pipeline.wheel import setuptools_era
    monkeypatch.setattr(setuptools_era, "MAX_METADATA_BYTES", 32)
    sdist = tar_with(tmp_path / "p-1.tar.gz", [member("p-1/a.py"), pkg_info])
    wheel = _wheel(tmp_path / "p-1-py3-none-any.whl", b"Name: p\n\n")
    before = sorted(tmp_path.iterdir())
    evidence = setuptools_era.read_metadata_evidence(wheel, sdist, sdist.name)
    assert evidence.pkg_info == "" and setuptools_era.infer_setuptools_bounds(evidence) == []
    assert sorted(tmp_path.iterdir()) == before  # nothing extracted or written


def test_undecodable_or_oversized_metadata_gives_no_bound(tmp_path, monkeypatch):
    from pipeline.wheel import setuptools_era
    sdist = tar_with(tmp_path / "p-1.tar.gz", [member("p-1/a.py")])
    garbled = setuptools_era.read_metadata_evidence(
        _wheel(tmp_path / "a.whl", b"\xff\xfe Platform: UNKNOWN\x00\n\n"), sdist, sdist.name)
    assert setuptools_era.infer_setuptools_bounds(garbled) == []  # not a header: no marker
    monkeypatch.setattr(setuptools_era, "MAX_METADATA_BYTES", 8)
    big = setuptools_era.read_metadata_evidence(
        _wheel(tmp_path / "b.whl", b"Name: p\nPlatform: UNKNOWN\n\n"), sdist, sdist.name)
    assert big.metadata == "" and setuptools_era.infer_setuptools_bounds(big) == []
