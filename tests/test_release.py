"""Releases: signed (stock minisign verifies), chained, logged, comparable; tampering is detected."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from pipeline.export.carmake import make_car
from pipeline.trust import tlog
from pipeline.trust.release import ReleaseError, Releases, prove_consistency, prove_inclusion, verify_release
from pipeline.trust.signing import SecretKey, SignatureError, minisign_sign, minisign_verify, write_keypair

from .conftest import REPO
from .test_snapshot import tiny_snapshot

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def published_of(decls, snap_published):
    return [{"project": w.project, "version": w.version, "filename": w.wheel.filename, "sha256": w.wheel.sha256,
             "verdict": w.verdict, "tests": None} for w in snap_published]


@pytest.fixture
def key(tmp_path):
    return write_keypair(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub")


def release_once(world, rel, key, **extra_files):
    snap, decls, published = tiny_snapshot(world, **extra_files)
    make_car(world.store, snap.root, log=lambda m: None)  # what `doit publish` does first
    return snap, rel.publish(key, snap.root, snap.car_path, published_of(decls, published),
                             {"wheels": len(published)}, "abc123", NOW, refuse_inside=[world.store_root],
                             key_path=world.root / "keys" / "release.key")


def test_release_is_signed_and_verifiable_by_stock_minisign(world, key, tmp_path):
    rel = Releases(world.root / "releases")
    snap, (path, manifest) = release_once(world, rel, key)
    assert manifest["sequence"] == 1 and manifest["previous"] is None and manifest["root"] == str(snap.root)
    car_sha = hashlib.sha256(snap.car_path.read_bytes()).hexdigest()
    assert manifest["car"] == {"filename": snap.car_path.name, "sha256": car_sha, "size": snap.car_size}
    assert manifest["declarations_commit"] == "abc123"
    assert shutil.which("minisign"), "stock minisign (Debian package, installed by `make test`) is required"
    out = subprocess.run(["minisign", "-V", "-p", str(rel.root / "wheelproof.pub"), "-m", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "wheelproof release 1" in out.stdout
    verified = verify_release(path, path.with_suffix(".json.minisig"), snap.car_path, rel.public_key(),
                              log=lambda m: None)
    assert verified == manifest
    assert "ipfs://" + str(snap.root) in (rel.root / "feed.atom").read_text()
    assert not list(world.store_root.rglob("*.key")) and not list(rel.root.rglob("*.key"))


def test_chain_log_and_diff(world, key):
    rel = Releases(world.root / "releases")
    first_snap, (first, m1) = release_once(world, rel, key)
    old_checkpoint = (rel.log / "checkpoint").read_text()
    second_snap, (second, m2) = release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    assert m2["sequence"] == 2 and m2["previous"]["root"] == m1["root"]
    assert m2["changes"]["bytes_changed"][0]["project"] == "tiny-lib"
    assert "1 bytes changed" in m2["changes"]["summary"]
    old, new, proof = prove_consistency(rel, key.public, old_checkpoint)
    assert (old.size, new.size) == (3, 6) and proof
    found = prove_inclusion(rel, key.public, lambda d: d["kind"] == "wheel" and d["release"] == m2["root"])
    assert len(found) == 2
    feed = (rel.root / "feed.atom").read_text()
    assert feed.count("<entry>") == 2 and "1 bytes changed" in feed
    with pytest.raises(ReleaseError, match="already released"):
        release_once(world, rel, key, **{"extra.py": "X = 1\n"})


def test_secret_key_inside_the_store_is_refused(world, tmp_path):
    rel = Releases(world.root / "releases")
    inside = world.store_root / "oops.key"
    key = write_keypair(inside, tmp_path / "oops.pub")
    snap, decls, published = tiny_snapshot(world)
    with pytest.raises(ReleaseError, match="inside"):
        rel.publish(key, snap.root, snap.car_path, published_of(decls, published), {}, None, NOW,
                    refuse_inside=[world.store_root], key_path=inside)


def test_doit_publish_makes_the_car_when_it_is_not_made(world, tmp_path_factory):
    """`doit publish` (tasks.publish, run as doit runs it) on a snapshot whose CAR was never made makes it,
    signs its SHA-256 and size, and a second publish reuses it by its stamp."""
    from pipeline.export import torrent

    snap, _, _ = tiny_snapshot(world)
    torrent.write(world.store, snap.root, "http://gw.test")
    assert not snap.car_path.exists()
    env = {**world.env(), "WHEELPROOF_RELEASES": str(world.root / "releases")}
    keys = tmp_path_factory.mktemp("publisher")  # outside the declarations' parent, which publish refuses
    write_keypair(keys / "release.key", keys / "release.pub")
    code = ("import sys; from pipeline.cli import tasks; "
            f"sys.exit(0 if tasks.publish({str(keys / 'release.key')!r}) else 1)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    data = snap.car_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert f"publish: car: {snap.car_path} ({snap.car_size:,} bytes, sha256 {sha}" in out.stdout
    rel = Releases(world.root / "releases")
    path = rel.latest()
    assert path is not None
    manifest = verify_release(path, path.with_suffix(".json.minisig"), snap.car_path, rel.public_key(),
                              log=lambda m: None)
    assert manifest["car"] == {"filename": snap.car_path.name, "sha256": sha, "size": len(data)}
    assert len(data) == snap.car_size
    # made once: `python -m pipeline car` now finds it made and checks it by its stamp
    out = subprocess.run([sys.executable, "-m", "pipeline", "car", str(snap.root)], env=env, capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0 and f"car: {snap.car_path} is made and checks" in out.stdout, out.stderr


def test_publishing_an_unmade_car_directly_says_how_to_make_it(world, key):
    rel = Releases(world.root / "releases")
    snap, decls, published = tiny_snapshot(world)
    with pytest.raises(ReleaseError, match=f"make it with `python -m pipeline car {snap.root}`"):
        rel.publish(key, snap.root, snap.car_path, published_of(decls, published), {}, None, NOW,
                    refuse_inside=[world.store_root], key_path=world.root / "keys" / "release.key")
    assert not (rel.root / "manifests").exists() or not list((rel.root / "manifests").iterdir())


# -- tampering --------------------------------------------------------------------------------------

def test_changed_manifest_is_detected(world, key):
    rel = Releases(world.root / "releases")
    snap, (path, _) = release_once(world, rel, key)
    path.write_text(path.read_text().replace('"abc123"', '"evil99"'))
    with pytest.raises(ReleaseError, match="signature does not match"):
        verify_release(path, path.with_suffix(".json.minisig"), snap.car_path, rel.public_key(), log=lambda m: None)
    assert subprocess.run(["minisign", "-V", "-p", str(rel.root / "wheelproof.pub"), "-m", str(path)],
                          capture_output=True).returncode != 0


def test_changed_car_is_detected(world, key, tmp_path):
    rel = Releases(world.root / "releases")
    snap, (path, _) = release_once(world, rel, key)
    bad = tmp_path / "bad.car"
    data = bytearray(snap.car_path.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="SHA-256 or size differs"):
        verify_release(path, path.with_suffix(".json.minisig"), bad, rel.public_key(), log=lambda m: None)


def test_wheel_swapped_in_the_store_is_detected(world, key):
    from pipeline.export.snapshot import walk
    from pipeline.model.errors import IntegrityError

    rel = Releases(world.root / "releases")
    snap, (path, manifest) = release_once(world, rel, key)
    wheel = manifest["wheels"][0]
    obj = world.store.object_path(wheel["sha256"])
    obj.chmod(0o644)
    obj.write_bytes(b"a different wheel")
    with pytest.raises(IntegrityError, match="corrupt"):
        walk(world.store, snap.root)  # what the gateway and any re-export read
    assert world.store.fsck()


def test_log_rewritten_to_drop_an_entry_is_detected(world, key):
    rel = Releases(world.root / "releases")
    release_once(world, rel, key)
    saved = (rel.log / "checkpoint").read_text()
    release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    entries = rel.entries(6)
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, entries[:1] + entries[2:])  # drop one entry, keep the signed checkpoint
    with pytest.raises(ReleaseError, match="rewritten"):
        rel.verified_log(key.public)
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, entries[:1] + entries[2:] + entries[-1:])  # same size, one entry swapped
    with pytest.raises(ReleaseError, match="rewritten"):
        rel.verified_log(key.public)
    # and a log re-signed after dropping the entry is not consistent with a checkpoint someone saved
    from pipeline.trust.release import Checkpoint
    from pipeline.trust.signing import sign_note
    dropped = entries[:1] + entries[2:]
    shutil.rmtree(rel.log / "tile")
    tlog.write_tiles(rel.log, dropped)
    cp = Checkpoint(rel.origin, len(dropped), tlog.root([tlog.leaf_hash(e) for e in dropped]))
    (rel.log / "checkpoint").write_text(sign_note(key, rel.origin, cp.text()))
    with pytest.raises(ReleaseError, match="NOT consistent"):
        prove_consistency(rel, key.public, saved)
    # publishing refuses to sign on top of a log inconsistent with its last checkpoint
    (rel.log / "checkpoint").write_text(saved)
    with pytest.raises(ReleaseError):
        release_once(world, rel, key, **{"extra.py": "X = 2\n"})


def test_checkpoint_signed_by_another_key_is_rejected(world, key):
    from pipeline.trust.signing import sign_note

    rel = Releases(world.root / "releases")
    release_once(world, rel, key)
    text = (rel.log / "checkpoint").read_text().split("\n\n")[0] + "\n"
    (rel.log / "checkpoint").write_text(sign_note(SecretKey.generate(), rel.origin, text))
    with pytest.raises(ReleaseError, match="no valid signature"):
        rel.checkpoint(key.public)


def test_manifest_signed_by_another_key_is_rejected(tmp_path, key):
    other = SecretKey.generate()
    sig = minisign_sign(other, b"data", "t")
    with pytest.raises(SignatureError, match="another key"):
        minisign_verify(key.public, b"data", sig)
    assert minisign_verify(key.public, b"data", minisign_sign(key, b"data", "t")) == "t"


def test_diff_cli(world, key, tmp_path):
    rel_root = world.root / "releases"
    rel = Releases(rel_root)
    release_once(world, rel, key)
    release_once(world, rel, key, **{"extra.py": "X = 1\n"})
    env = {**world.env(), "WHEELPROOF_RELEASES": str(rel_root)}
    import sys
    out = subprocess.run([sys.executable, "-m", "pipeline", "diff", "1", "2"], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "! tiny-lib tiny_lib-2.0-py3-none-any.whl: bytes changed" in out.stdout
    doc = json.loads(subprocess.run([sys.executable, "-m", "pipeline", "diff", "1", "2", "--json"], env=env,
                                    capture_output=True, text=True).stdout)
    assert doc["bytes_changed"][0]["project"] == "tiny-lib" and doc["added"] == []
