"""Environment integrity with real environments: pip/uv installs through our gateway, verify-env, install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.export.snapshot import publish
from pipeline.realise.fetch import fetch
from pipeline.wheel.facts import facts_for

from .conftest import build_record, needs_bwrap
from .test_snapshot import _fresh_env, gateway  # noqa: F401  (fixture)

EVIL = ("import pathlib, tiny_lib\ntry:\n    pathlib.Path(tiny_lib.__file__).write_text('VALUE = 666\\n')\n"
        "except OSError:\n    pass\n")


def env_snapshot(world, **lib_files: str):
    """tiny-lib, tiny-app (a console script) and tiny-evil (its import rewrites tiny_lib.py)."""
    lib = world.declare_tiny("tiny-lib", "2.0", files={"tiny_lib.py": "VALUE = 42\n", **lib_files})
    app = world.declare_tiny("tiny-app", "1.0", dependencies=["tiny-lib>=2"], files={
        "tiny_app.py": "from tiny_lib import VALUE\ndef main():\n    print(VALUE)\n",
        "tiny_app-1.0.dist-info/entry_points.txt": "[console_scripts]\ntiny-app = tiny_app:main\n"})
    evil = world.declare_tiny("tiny-evil", "1.0", dependencies=["tiny-lib"], files={"tiny_evil.py": EVIL})
    decls = {"tiny-app": app, "tiny-lib": lib, "tiny-evil": evil}
    for d in decls.values():
        for w in d.wheels:
            fetch(world.store, w, what=str(d.path))
    records = {n: build_record("d" * 64, "identical", n) for n in decls}
    snap, published = publish(world.store, decls, records,
                              lambda d, w: facts_for(world.store, w.sha256, w.filename).metadata or b"",
                              log=lambda m: None)
    return snap, decls, published


def venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def pip_install(tmp_path, python: Path, index: str, *names: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--isolated", "--index-url",
                    index, *names], check=True, env=_fresh_env(tmp_path), capture_output=True)


def verify(world, python: Path, snap, *extra: str):
    return world.cli("verify-env", str(python), "--snapshot", str(snap.root), *extra)


@pytest.mark.integration
def test_pip_and_uv_installs_verify_and_tampering_is_caught(world, gateway, tmp_path):  # noqa: F811
    snap, _, _ = env_snapshot(world)
    index = f"http://127.0.0.1:{gateway.server_address[1]}/ipfs/{snap.root}/simple/"
    py = venv(tmp_path / "v")
    pip_install(tmp_path, py, index, "tiny-app")
    assert (tmp_path / "v/bin/tiny-app").exists() and list((tmp_path / "v/lib").rglob("*.pyc"))
    out = verify(world, py, snap)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verify-env: ok: 2 distributions" in out.stdout
    # uv writes another console-script launcher; it verifies too
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "uv is a test dependency"
    uv_py = venv(tmp_path / "u")
    subprocess.run([uv, "pip", "install", "--python", str(uv_py), "--index-url", index, "tiny-app"], check=True,
                   env=_fresh_env(tmp_path), capture_output=True)
    out = verify(world, uv_py, snap)
    assert out.returncode == 0, out.stdout + out.stderr
    # a modified file
    site = next((tmp_path / "v/lib").glob("python3*/site-packages"))
    (site / "tiny_lib.py").write_text("VALUE = 41\n")
    out = verify(world, py, snap)
    assert out.returncode == 1
    assert "modified      lib/python3" in out.stdout and "tiny_lib.py: sha256" in out.stdout
    assert "byte code of a source that failed verification" in out.stdout
    (site / "tiny_lib.py").write_text("VALUE = 42\n")
    # an added .pth that runs code, and a launcher pointed elsewhere
    (site / "zz-hook.pth").write_text("import os; os.environ['X'] = '1'\n")
    out = verify(world, py, snap, "--json")
    import json
    doc = json.loads(out.stdout)
    kinds = {(f["kind"], f["subject"].rsplit("/", 1)[-1]) for f in doc["findings"] if not f["allowed_by"]}
    assert out.returncode == 1 and ("pth-exec", "zz-hook.pth") in kinds and ("unknown", "zz-hook.pth") in kinds
    # a documented exception lets that path pass
    allow = tmp_path / "allow.toml"
    allow.write_text('schema = 1\n\n[[allow]]\npath = "lib/python3.*/site-packages/zz-hook.pth"\n'
                     'kinds = ["pth-exec", "unknown"]\nreason = "our site hook"\n')
    out = verify(world, py, snap, "--allow-file", str(allow))
    assert out.returncode == 0, out.stdout
    assert "[allowed: " in out.stdout and "our site hook" in out.stdout
    # a console script rewritten to run something else
    launcher = tmp_path / "v/bin/tiny-app"
    launcher.write_text(launcher.read_text().replace("from tiny_app import main", "from os import system as main"))
    out = verify(world, py, snap, "--allow-file", str(allow))
    assert out.returncode == 1 and "bin/tiny-app: it is not the launcher for tiny_app:main" in out.stdout


def test_bad_exceptions_file_names_file_line_and_field(world, tmp_path):
    snap, _, _ = env_snapshot(world)
    bad = tmp_path / "allow.toml"
    bad.write_text('schema = 1\n\n[[allow]]\npath = "x"\n\n[[allow]]\npath = "y"\nkinds = ["nope"]\n')
    out = verify(world, Path(sys.executable), snap, "--allow-file", str(bad))
    assert out.returncode == 2
    assert f"{bad}:3: allow[0].reason: required" in out.stderr and f"{bad}:6: allow[1].kinds" in out.stderr


@needs_bwrap
def test_install_is_sandboxed_verified_and_refuses_an_import_that_rewrites_another_package(world, tmp_path):
    snap, _, _ = env_snapshot(world)
    py = venv(tmp_path / "v")
    out = world.cli("install", "tiny-app", "--into", str(tmp_path / "v"), "--snapshot", str(snap.root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verify-env: ok: 2 distributions" in out.stdout
    run = subprocess.run([str(tmp_path / "v/bin/tiny-app")], capture_output=True, text=True)
    assert run.stdout.strip() == "42"
    assert verify(world, py, snap).returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "v").rglob("*"))
    out = world.cli("install", "tiny-evil", "--into", str(tmp_path / "v"), "--snapshot", str(snap.root))
    assert out.returncode == 1
    assert "import-wrote  dist:tiny-evil: importing tiny_evil wrote 1 files: lib/python3" in out.stdout
    assert "tiny_lib.py" in out.stdout and "NOT installed" in out.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "v").rglob("*")) == before  # untouched
    assert subprocess.run([str(py), "-c", "import tiny_lib; print(tiny_lib.VALUE)"], capture_output=True,
                          text=True).stdout.strip() == "42"
    assert not list(tmp_path.glob(".v.wheelproof-*"))
    # an exception for that distribution lets it through (and the finding stays visible)
    out = world.cli("install", "tiny-evil", "--into", str(tmp_path / "v"), "--snapshot", str(snap.root),
                    "--allow", "dist:tiny-evil", "--allow", "lib/python3.*/site-packages/tiny_lib.py")
    assert out.returncode == 0, out.stdout
    assert "[allowed: --allow (command line)]" in out.stdout
