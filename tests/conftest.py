"""Fixtures that make tiny packages, declarations and stores inside each test."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.model.declaration import Declaration, load, path_for
from pipeline.model.records import ArtifactRef, BuildRecord, LogRef, OutputWheel
from pipeline.store.local import Store, sha256_file

REPO = Path(__file__).resolve().parent.parent
TINY_BACKEND = Path(__file__).with_name("tinybackend.py")
SDE = 1700000000

# Sandboxed tests never skip: without bubblewrap they fail with the sandbox's own message
# (`make test` installs it).
needs_bwrap = pytest.mark.sandbox


def make_sdist(dest: Path, name: str, version: str, *, files: dict[str, str] | None = None,
               hook: str | None = None, sdist_files: dict[str, str] | None = None, **spec: object) -> Path:
    """An sdist whose pyproject.toml names the in-tree tiny backend (no build inputs)."""
    top = f"{name}-{version}"
    spec = {"name": name, "version": version, "files": files or {f"{name.replace('-', '_')}.py": "X = 1\n"},
            "requires_python": ">=3.8", **spec}
    members = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n',
        "tinybackend.py": TINY_BACKEND.read_text(),
        "tiny.json": json.dumps(spec),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    if hook is not None:
        members["hook.py"] = hook
    members.update(sdist_files or {})  # in the sdist only (tests), not in the wheel
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name.replace('-', '_')}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for rel, text in sorted(members.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(data), SDE, 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def build_upstream(sdist: Path, dest: Path, sde: int = SDE) -> Path:
    """The 'upstream' wheel: the same backend run directly, outside any sandbox."""
    work = dest / "unpacked"
    with tarfile.open(sdist) as tf:
        tf.extractall(work, filter="data")
    (src,) = list(work.iterdir())
    out = dest / "upstream"
    out.mkdir(parents=True, exist_ok=True)
    code = "import sys, tinybackend; print(tinybackend.build_wheel(sys.argv[1]))"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(sde)}
    if (src / "hook.py").exists():
        (src / "hook.py").unlink()  # upstream built it cleanly
    name = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    shutil.rmtree(work)
    return out / name


def declaration_text(name: str, version: str, sdist: Path, wheel: Path, *, url_of: Callable[[Path], str],
                     sde: int = SDE, extra: str = "", dependencies: list[str] | None = None,
                     extras: list[str] | None = None) -> str:
    s_sha, s_size = sha256_file(sdist)
    w_sha, w_size = sha256_file(wheel)
    deps = json.dumps(dependencies or [])
    return f"""schema = 1
name = "{name}"
version = "{version}"
requires-python = ">=3.8"
extras = {json.dumps(extras or [])}
dependencies = {deps}

[sdist]
filename = "{sdist.name}"
url = "{url_of(sdist)}"
sha256 = "{s_sha}"
size = {s_size}

[[wheels]]
filename = "{wheel.name}"
url = "{url_of(wheel)}"
sha256 = "{w_sha}"
size = {w_size}

[build]
backend = "tinybackend"
backend-path = ["."]
requires = []
source-date-epoch = {sde}
inputs = []
{extra}"""


@dataclass
class World:
    """A declarations tree, a store and a dist directory, all under tmp_path.

    Fixture files are served over HTTP on 127.0.0.1 (``base_url``), which the URL policy accepts
    only because the ``world`` fixture sets WHEELPROOF_ALLOW_LOOPBACK=1.
    """

    root: Path
    declarations: Path
    store_root: Path
    dist: Path
    base_url: str = ""

    def url_of(self, path: Path) -> str:
        return f"{self.base_url}/{path.relative_to(self.root).as_posix()}"

    @property
    def store(self) -> Store:
        return Store(self.store_root)

    def declare_tiny(self, name: str = "tiny", version: str = "1.0", *, hook: str | None = None,
                     upstream_sde: int = SDE, mutate_upstream: bool = False, test_table: str = "",
                     sdist_files: dict[str, str] | None = None, **spec: object) -> Declaration:
        sdist = make_sdist(self.dist / f"{name}-{version}", name, version, hook=hook, sdist_files=sdist_files,
                           **spec)
        wheel = build_upstream(sdist, self.dist / f"{name}-{version}", sde=upstream_sde)
        if mutate_upstream:
            _rewrite_member(wheel, f"{name.replace('-', '_')}.py", b"X = 2\n")
        path = path_for(name, self.declarations)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(declaration_text(name, version, sdist, wheel, url_of=self.url_of,
                                         dependencies=list(spec.get("dependencies", [])),  # type: ignore[call-overload]
                                         extra=test_table,
                                         extras=list(spec.get("extras", []))))  # type: ignore[call-overload]
        return load(path, self.declarations)

    def env(self) -> dict[str, str]:
        return {**os.environ, "WHEELPROOF_STORE": str(self.store_root),
                "WHEELPROOF_DECLARATIONS": str(self.declarations)}

    def doit(self, *args: str, command: str = "run", check: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "doit", command, "-f", str(REPO / "dodo.py"), "--db-file",
               str(self.root / "doit.db"), *args]
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=check, cwd=self.root)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline", *args], env=self.env(), capture_output=True,
                              text=True, cwd=REPO)


def _rewrite_member(wheel: Path, member: str, data: bytes) -> None:
    import zipfile

    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename == member else src.read(info.filename))
    tmp.replace(wheel)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving tmp_path (declarations may name it with the loopback opt-in)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_QuietFiles, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def world(tmp_path: Path, file_server: str, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")  # the fixtures are served on 127.0.0.1
    w = World(tmp_path, tmp_path / "declarations", tmp_path / "store", tmp_path / "dist", file_server)
    w.declarations.mkdir()
    return w


def build_record(drv_id: str, verdict: str = "identical", name: str = "tiny",
                 upstream: str | None = None) -> BuildRecord:
    """A well-formed build record for ``drv_id`` (for tests that need records without building);
    ``upstream``: the filename of the wheel the rebuild was compared with."""
    wheel = ArtifactRef(upstream or f"{name.replace('-', '_')}-1.0-py3-none-any.whl", "1" * 64)
    return BuildRecord(
        derivation_id=drv_id, derivation={"name": name}, declaration=f"{name[:2]}/{name}.toml", name=name,
        version="1.0", started="2026-01-01T00:00:00Z", sandbox="bubblewrap", inputs={f"{name}-1.0.tar.gz": "2" * 64},
        upstream=wheel, verdict=verdict, builder_result={}, log=LogRef("3" * 64), timings={"total": 1.5},
        references=("2" * 64,), output=OutputWheel(wheel.filename, wheel.sha256, 10) if verdict != "failed" else None)


@pytest.fixture(autouse=True)
def _builder_key(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Builds sign with a builder key: one per test session, never the user's ~/.config one."""
    path = tmp_path_factory.getbasetemp() / "builder.key"
    monkeypatch.setenv("WHEELPROOF_BUILDER_KEY", str(path))
    return path
@pytest.fixture
def farm(tmp_path: Path) -> Iterator[object]:
    """A real farm on 127.0.0.1: a ``dask scheduler``; tests start workers (tests/farm.py)."""
    from tests.farm import start_farm

    f = start_farm(tmp_path / "farm")
    try:
        yield f
    finally:
        f.stop()
