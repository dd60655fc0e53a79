"""The snapshot's other formats, for real: the conda channel (solved by py-rattler, extracted by
conda-package-handling), the BitTorrent v2/v1 hybrid (checked and transferred by libtorrent over
127.0.0.1), and PEP 751 locks installed by uv and pip from the gateway with no index."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pipeline.export import formats, torrent
from pipeline.export.carmake import make_car
from pipeline.export.ipfs.multiformats import CID
from pipeline.export.pylock import LockError
from pipeline.export.snapshot import publish
from pipeline.model import environments
from pipeline.model.declaration import load
from pipeline.realise.fetch import fetch
from pipeline.store.local import Store
from pipeline.wheel.facts import facts_for

from .conftest import build_record
from .test_snapshot import _fresh_env, gateway  # noqa: F401  (the gateway fixture)

ENVS = environments.load(environments.ENVIRONMENTS_FILE)
HERE = next(e for e in ENVS if e.name == f"cp{sys.version_info.major}{sys.version_info.minor}-manylinux-x86_64")


def format_snapshot(world, store: Store | None = None, gateway_url: str = "http://127.0.0.1:8080"):
    """tiny-app (needs tiny-lib[fast] and, on Windows only, tiny-win) and tiny-lib, with every format."""
    lib = world.declare_tiny("tiny-lib", "2.0", extras=["fast"], files={
        "tiny_lib.py": "VALUE = 42\n\ndef main():\n    print(VALUE)\n",
        "tiny_lib-2.0.dist-info/entry_points.txt": "[console_scripts]\ntiny-lib = tiny_lib:main\n"})
    app = world.declare_tiny("tiny-app", "1.0",
                             dependencies=["tiny-lib[fast]>=2", 'tiny-win; sys_platform == "win32"'],
                             files={"tiny_app.py": "from tiny_lib import VALUE\nANSWER = VALUE\n"})
    win = world.declare_tiny("tiny-win", "0.1")
    decls = {"tiny-app": app, "tiny-lib": lib, "tiny-win": win}
    store = store or world.store
    for d in decls.values():
        for w in d.wheels:
            fetch(store, w, what=str(d.path))
    records = {n: build_record("d" * 64, "identical", n) for n in decls}
    snap, published = publish(store, decls, records,
                              lambda d, w: facts_for(store, w.sha256, w.filename).metadata or b"",
                              log=lambda m: None,
                              subtrees=formats.subtrees(ENVS, gateway_url, log=lambda m: None, store=store))
    path, info = torrent.write(store, snap.root, gateway_url)
    return snap, decls, path, info


def test_formats_are_reproducible(world):
    snap, decls, path, info = format_snapshot(world)
    other = Store(world.root / "other-store")
    snap2, _, path2, info2 = format_snapshot(world, other)
    assert snap2.root == snap.root and snap2.car_plan == snap.car_plan
    assert path.read_bytes() == path2.read_bytes() and info == info2
    out = torrent.unpack(world.store, snap.root, world.root / "unpacked")
    noarch = sorted(p.name for p in (out / "conda" / "noarch").iterdir())
    assert noarch == ["repodata.json", "repodata.json.zst", "tiny-app-1.0-py_0.conda", "tiny-lib-2.0-py_0.conda",
                      "tiny-win-0.1-py_0.conda"]
    assert len(list((out / "locks").iterdir())) == len(ENVS) == 20
    # the torrent covers every file of the snapshot, and only those
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(info.pieces_roots) == files
    assert info.name == str(snap.root) and info.web_seeds == ("http://127.0.0.1:8080/ipfs/",)
    assert len(info.info_hash_v1) == 40 and len(info.info_hash_v2) == 64
    # where libtorrent can make the hybrid itself (no name extends a sibling directory), ours is its bytes
    import libtorrent as lt

    own = lt.create_torrent(lt.list_files(str(out)), torrent.PIECE_LENGTH)
    own.set_creator(torrent.CREATOR)
    own.set_creation_date(0)
    own.add_url_seed("http://127.0.0.1:8080/ipfs/")
    lt.set_piece_hashes(own, str(out.parent))
    assert bytes(lt.bencode(own.generate())) == path.read_bytes()


def _stub_python(dest: Path) -> Path:
    """A channel with one noarch package `python 3.12.0`, packed and indexed by the real tools."""
    from conda_package_handling.conda_fmt import CondaFormat_v2
    from rattler.index import index_fs

    tree = dest / "tree"
    (tree / "info").mkdir(parents=True)
    (tree / "info" / "index.json").write_text(json.dumps(
        {"name": "python", "version": "3.12.0", "build": "stub_0", "build_number": 0, "depends": [],
         "subdir": "noarch", "timestamp": 0}))
    (tree / "stub.txt").write_text("a stub interpreter for the solver\n")
    channel = dest / "channel"
    (channel / "noarch").mkdir(parents=True)
    CondaFormat_v2.create(str(tree), ["info/index.json", "stub.txt"], "python-3.12.0-stub_0.conda",
                          str(channel / "noarch"))
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False))
    return channel


def test_conda_channel_solves_and_packages_hold_the_wheels(world):
    from conda_package_handling import api as cph
    from rattler import Channel, SparseRepoData
    from rattler.solver import solve_with_sparse_repodata

    snap, decls, _, _ = format_snapshot(world)
    out = torrent.unpack(world.store, snap.root, world.root / "unpacked")
    noarch = out / "conda" / "noarch"
    stub = _stub_python(world.root / "stub")
    ours = SparseRepoData(Channel(str(out / "conda")), "noarch", str(noarch / "repodata.json"))
    theirs = SparseRepoData(Channel(str(stub)), "noarch", str(stub / "noarch" / "repodata.json"))
    records = asyncio.run(solve_with_sparse_repodata(["tiny-app", "tiny-lib >=2"], [ours, theirs]))
    assert sorted((str(r.name.normalized), str(r.version)) for r in records) == [
        ("python", "3.12.0"), ("tiny-app", "1.0"), ("tiny-lib", "2.0")]
    # the dependency with a marker (Windows only) is not a dependency of the noarch package
    app = next(r for r in records if r.name.normalized == "tiny-app")
    assert [str(d) for d in app.depends] == ["tiny-lib >=2", "python >=3.8"]
    # every package extracts, and its site-packages are the wheel's files
    for name, d in decls.items():
        (pkg,) = noarch.glob(f"{name}-*.conda")
        dest = world.root / "extract" / name
        cph.extract(str(pkg), dest_dir=str(dest))
        assert json.loads((dest / "info" / "index.json").read_text())["noarch"] == "python"
        with zipfile.ZipFile(world.store.verified_path(d.wheels[0].sha256)) as whl:
            members = {i.filename: whl.read(i) for i in whl.infolist() if not i.is_dir()}
        site = dest / "site-packages"
        got = {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()}
        added = set(got) - set(members)
        assert {Path(a).name for a in added} <= {"INSTALLER", "REQUESTED"}, added
        # whl2conda keeps the wheel's own dependencies in METADATA only under `extra == 'original'`
        # (inside a conda environment conda, not pip, owns them); every other file is the wheel's
        meta = next(k for k in members if k.endswith(".dist-info/METADATA"))
        assert {k: got[k] for k in members if k != meta} == {k: v for k, v in members.items() if k != meta}
        def fields(text: bytes) -> list[str]:
            return [ln for ln in text.decode().splitlines() if ln and not ln.startswith(("Requires-Dist",
                                                                                         "Provides-Extra"))]
        assert fields(got[meta]) == fields(members[meta])
    link = json.loads((world.root / "extract" / "tiny-lib" / "info" / "link.json").read_text())
    assert link["noarch"] == {"type": "python", "entry_points": ["tiny-lib=tiny_lib:main"]}


def _lt_session(lt, **extra):
    return lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                       "enable_upnp": False, "enable_natpmp": False, "alert_mask": lt.alert_category.error,
                       "allow_multiple_connections_per_ip": True, **extra})


def _wait(handle, done, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = handle.status()
        if done(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"libtorrent: state {handle.status().state}, progress {handle.status().progress}")


@pytest.mark.integration
def test_libtorrent_verifies_and_transfers_the_snapshot(world):
    import libtorrent as lt

    snap, decls, path, info = format_snapshot(world)
    seed_dir = world.root / "seed"
    out = torrent.unpack(world.store, snap.root, seed_dir)
    ti = lt.torrent_info(str(path))
    seeder = _lt_session(lt)
    handle = seeder.add_torrent({"ti": ti, "save_path": str(seed_dir), "url_seeds": []})
    handle.force_recheck()
    status = _wait(handle, lambda s: s.state == lt.torrent_status.seeding)
    assert status.progress == 1.0 and status.total_wanted_done == status.total_wanted  # 100% verified
    leech_dir = world.root / "leech"
    leecher = _lt_session(lt)
    got = leecher.add_torrent({"ti": lt.torrent_info(str(path)), "save_path": str(leech_dir), "url_seeds": []})
    got.connect_peer(("127.0.0.1", seeder.listen_port()))
    status = _wait(got, lambda s: s.is_seeding)
    assert status.progress == 1.0
    want = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    have_root = leech_dir / str(snap.root)
    got.flush_cache()  # the disk threads write behind the piece checks
    deadline = time.monotonic() + 30
    while True:
        have = {p.relative_to(have_root): p.read_bytes() for p in have_root.rglob("*") if p.is_file()}
        if have == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert have == want and len(want) == len(info.pieces_roots)
    # a changed byte is caught by the check
    victim = sorted(p for p in out.rglob("*.whl"))[0]
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    handle.force_recheck()
    status = _wait(handle, lambda s: s.state not in (lt.torrent_status.checking_files,
                                                      lt.torrent_status.checking_resume_data) and s.progress < 1.0)
    assert status.progress < 1.0


@pytest.mark.integration
def test_lock_cli_installs_with_uv_and_pip_from_the_gateway(world, gateway, tmp_path):  # noqa: F811
    base = f"http://127.0.0.1:{gateway.server_address[1]}"
    snap, decls, _, _ = format_snapshot(world, gateway_url=base)
    lock = tmp_path / "pylock.toml"
    shutil.copy(environments.ENVIRONMENTS_FILE, world.declarations / "environments.toml")
    result = world.cli("lock", "tiny-app", "--snapshot", str(snap.root), "--environment", HERE.name,
                       "--gateway", base, "-o", str(lock))
    assert result.returncode == 0, result.stderr
    text = lock.read_text()
    assert "tiny-win" not in text  # its marker is false on Linux
    assert f'url = "{base}/ipfs/{snap.root}/simple/tiny-lib/' in text
    env = _fresh_env(tmp_path)
    env.update(UV_INDEX_URL="http://127.0.0.1:9/none/", PIP_INDEX_URL="http://127.0.0.1:9/none/")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is a test dependency"
    venv = tmp_path / "uv-venv"
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, env=env)
    r = subprocess.run([uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-index", "-r",
                        str(lock)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import tiny_app; print(tiny_app.ANSWER)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    pip_venv = tmp_path / "pip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(pip_venv)], check=True)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(pip_venv / "bin" / "python"), "install",
                        "--isolated", "--no-index", "-r", str(lock)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run([str(pip_venv / "bin" / "python"), "-c", "import tiny_lib; print(tiny_lib.VALUE)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    # the snapshot's own lock for this environment installs too (wheels by their project directory's CID)
    own = tmp_path / "own" / "pylock.toml"
    own.parent.mkdir()
    own.write_bytes(torrent.unpack(world.store, snap.root, tmp_path / "u").joinpath(
        "locks", f"pylock.{HERE.name}.toml").read_bytes())
    venv2 = tmp_path / "uv-venv2"
    subprocess.run([uv, "venv", "-q", str(venv2)], check=True, env=env)
    r = subprocess.run([uv, "pip", "install", "--python", str(venv2 / "bin" / "python"), "--no-index", "-r",
                        str(own)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run([uv, "pip", "list", "--python", str(venv2 / "bin" / "python")], env=env,
                            capture_output=True, text=True).stdout
    # the snapshot's lock is for the whole set: tiny-win is a project of the set, so it is in it
    assert all(f"{n} " in listed for n in ("tiny-app", "tiny-lib", "tiny-win"))


def test_release_manifest_records_the_torrent(world, tmp_path):
    import datetime as dt

    from pipeline.trust.release import Releases
    from pipeline.trust.signing import SecretKey

    snap, _, path, info = format_snapshot(world)
    rel = Releases(world.root / "releases")
    made = make_car(world.store, snap.root, log=lambda m: None)
    _, manifest = rel.publish(SecretKey.generate(), snap.root, made.path, [], {}, None,
                              dt.datetime(2026, 1, 1, tzinfo=dt.UTC), refuse_inside=[],
                              state=world.root / "publisher.checkpoint")
    field = manifest["torrent"]
    assert field["info_hash_v1"] == info.info_hash_v1 and field["info_hash_v2"] == info.info_hash_v2
    assert field["pieces_roots"] == info.pieces_roots
    assert field["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert CID.parse(manifest["root"]) == snap.root and os.path.basename(field["filename"]) == path.name


def test_a_dependency_written_in_mixed_case_gets_the_channels_conda_name(tmp_path):
    """``Requires-Dist: MarkupSafe >=2.0`` (jinja2 writes it so) becomes ``markupsafe >=2.0``: conda names
    are lower case, and the channel's package for markupsafe is named so."""
    import base64
    import zipfile

    from pipeline.export.conda import ChannelWheel, NameMap, convert, validate_depends

    wheel = tmp_path / "mixed-1.0-py3-none-any.whl"
    files = {
        "mixed/__init__.py": b"X = 1\n",
        "mixed-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: mixed\nVersion: 1.0\n"
                                         b"Requires-Dist: MarkupSafe >=2.0\nRequires-Dist: Tiny_Lib\n",
        "mixed-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{n},{digest(d)},{len(d)}\n" for n, d in files.items()) + "mixed-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("mixed-1.0.dist-info/RECORD", record)
    pkg = convert(ChannelWheel("mixed", "1.0", wheel.name, wheel), NameMap({}, {}), tmp_path / "work")
    assert {d.strip() for d in pkg.depends} == {"markupsafe >=2.0", "tiny-lib"}
    assert sorted(validate_depends(pkg.depends, "mixed")) == ["markupsafe", "tiny-lib"]


def test_a_project_whose_requires_python_excludes_an_environment_is_not_locked_there():
    """As `doit check` judges it: django requiring Python >= 3.12 is not offered to cp311 (3.11.0), so the
    cp311 lock leaves it out instead of the snapshot failing."""
    from pipeline.export import pylock
    from pipeline.model import environments

    envs = {e.name: e for e in environments.load()}
    cp311, cp312 = envs["cp311-manylinux-x86_64"], envs["cp312-manylinux-x86_64"]
    wheel = pylock.LockableWheel("django", "6.1", "django-6.1-py3-none-any.whl", "0" * 64, 1, ">=3.12", [], "u")
    assert pylock.fits(wheel, cp311) and not pylock.serves(wheel, cp311)
    assert pylock.serves(wheel, cp312)
    patch = pylock.LockableWheel("soupsieve", "3.0", "soupsieve-3.0-py3-none-any.whl", "0" * 64, 1, ">=3.11.5", [],
                                 "u")
    assert not pylock.serves(patch, cp311)  # the environment is 3.11.0


def test_a_project_left_out_of_an_environment_is_not_in_its_lock(world):
    """A pure project whose dependency is not installable in an environment is declared
    ``[[unsupported]]`` there (check's closure rule); that environment's lock leaves it out instead of
    failing on the dependency (as the 456-project set's first cold run did on dateparser/regex)."""
    dep = world.declare_tiny("tiny-dep", "1.0")
    dep.path.write_text(dep.path.read_text().replace('requires-python = ">=3.8"', 'requires-python = ">=3.8,<3.14"'))
    dep = load(dep.path, world.declarations)
    app = world.declare_tiny("tiny-app", "1.0", dependencies=["tiny-dep"])
    decls = {"tiny-app": app, "tiny-dep": dep}
    for d in decls.values():
        for w in d.wheels:
            fetch(world.store, w, what=str(d.path))
    records = {n: build_record("d" * 64, "identical", n) for n in decls}

    def export(unavailable):
        return publish(world.store, decls, records,
                       lambda d, w: facts_for(world.store, w.sha256, w.filename).metadata or b"",
                       log=lambda m: None, subtrees=formats.subtrees(ENVS, "http://gw.test", log=lambda m: None,
                                                                     store=world.store, unavailable=unavailable))

    with pytest.raises(LockError, match=r"tiny_dep-1.0-py3-none-any.whl \(required by tiny-app\) requires Python"):
        export(None)
    snap, _ = export(lambda p, env: "tiny-dep does not support 3.14" if p == "tiny-app" and env.python == "3.14"
                     else None)
    out = torrent.unpack(world.store, snap.root, world.root / "unpacked")
    assert "tiny-app" not in (out / "locks" / "pylock.cp314-manylinux-x86_64.toml").read_text()
    assert 'name = "tiny-app"' in (out / "locks" / "pylock.cp313-manylinux-x86_64.toml").read_text()
