"""Hostile release directories: whoever can write it may delete, roll back, replay, re-point, re-sign.

Each attack is contained: `verify-release` (a verifier with a key from elsewhere and the newest
checkpoint it saw before) exits 1 with a clear message and leaves its state alone; `publish` refuses
before writing anything (no manifest, no tile, no checkpoint, no fork).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.export.carmake import make_car
from pipeline.trust import tlog
from pipeline.trust.release import Checkpoint, ReleaseError, Releases, logged_releases
from pipeline.trust.signing import SecretKey, minisign_sign, sign_note, write_keypair

from ..conftest import REPO
from ..test_release import NOW, published_of
from ..test_snapshot import tiny_snapshot


class Setup:
    """Two releases published by one key; a verifier that has seen release 2."""

    def __init__(self, world, tmp_path: Path):
        self.world = world
        self.keys = tmp_path / "keys"
        self.key = write_keypair(self.keys / "release.key", self.keys / "release.pub")
        self.rel = Releases(world.root / "releases")
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.state = tmp_path / "verifier" / "trusted-checkpoint"
        self.snaps, self.paths = [], []
        self.publish()
        self.cp1 = (self.rel.log / "checkpoint").read_text()
        self.publish(**{"extra.py": "X = 1\n"})

    def publish(self, **extra: str):
        snap, decls, published = tiny_snapshot(self.world, **extra)
        make_car(self.world.store, snap.root, log=lambda m: None)
        path, manifest = self.rel.publish(self.key, snap.root, snap.car_path, published_of(decls, published),
                                          {}, "abc123", NOW, refuse_inside=[self.world.store_root],
                                          key_path=self.keys / "release.key")
        self.snaps.append(snap)
        self.paths.append(path)
        return path, manifest

    def verify(self, manifest: Path | None = None, *extra: str, key: Path | None = None,
               state: bool = True) -> subprocess.CompletedProcess[str]:
        args = [str(manifest)] if manifest else []
        args += ["--public-key", str(key or self.keys / "release.pub")] if key is not False else []
        args += ["--state", str(self.state)] if state else []
        env = {**self.world.env(), "HOME": str(self.home), "WHEELPROOF_RELEASES": str(self.rel.root)}
        return subprocess.run([sys.executable, "-m", "pipeline", "verify-release", *args, *extra], env=env,
                              capture_output=True, text=True, cwd=REPO)

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.rel.root)): p.read_bytes() for p in sorted(self.rel.root.rglob("*"))
                if p.is_file() and p.name != ".publish.lock"}


@pytest.fixture
def s(world, tmp_path):
    setup = Setup(world, tmp_path)
    out = setup.verify()
    assert out.returncode == 0, out.stderr
    assert "verified: release 2" in out.stdout and "first use" in out.stdout
    assert Checkpoint.parse(setup.state.read_text().split("\n\n")[0] + "\n").size == 6
    return setup


def refused(s: Setup, out: subprocess.CompletedProcess[str], message: str, state_before: bytes) -> None:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert s.state.read_bytes() == state_before, "the verifier's state moved after a failed verification"


def publish_refused(s: Setup, match: str) -> None:
    before = s.files()
    pinned = (s.keys / "release.checkpoint").read_bytes()
    with pytest.raises(ReleaseError, match=match):
        s.publish(**{"extra.py": "X = 3\n"})
    assert s.files() == before, "a refused publish wrote into the release directory"
    assert (s.keys / "release.checkpoint").read_bytes() == pinned


def test_verifier_state_moves_forward_only_on_success(s):
    s.publish(**{"extra.py": "X = 2\n"})
    out = s.verify(s.paths[-1])
    assert out.returncode == 0, out.stderr
    assert "extends the checkpoint of size 6 seen before" in out.stdout and "now at size 9" in out.stdout
    out = s.verify(s.paths[0])  # an old release stays verifiable, and says it is not the newest
    assert out.returncode == 0 and "not the newest: release 3 is" in out.stdout


def test_deleted_log(s):
    before = s.state.read_bytes()
    shutil.rmtree(s.rel.log)
    refused(s, s.verify(s.paths[1]), "the log was deleted", before)
    publish_refused(s, "the log was deleted")


def test_everything_deleted_is_refused_by_the_publisher(s):
    shutil.rmtree(s.rel.root)
    s.rel.root.mkdir()
    publish_refused(s, "the log was deleted")


def test_checkpoint_rolled_back_to_an_older_validly_signed_one(s):
    before = s.state.read_bytes()
    (s.rel.log / "checkpoint").write_text(s.cp1)
    refused(s, s.verify(s.paths[0]), "the log was rolled back: ", before)
    publish_refused(s, "the log was rolled back")


def test_rolled_back_without_the_publishers_pin_is_caught_by_the_newest_manifest(s):
    (s.rel.log / "checkpoint").write_text(s.cp1)
    (s.keys / "release.checkpoint").unlink()  # a publisher on a fresh machine
    before = s.files()
    with pytest.raises(ReleaseError, match="000002-.* is not in the log"):
        s.publish(**{"extra.py": "X = 3\n"})
    assert s.files() == before


def test_latest_pointing_at_release_1(s):
    before = s.state.read_bytes()
    (s.rel.root / "latest").write_text(s.paths[0].name + "\n")
    refused(s, s.verify(), "names release 1, but the log's newest release is 2", before)
    path, manifest = s.publish(**{"extra.py": "X = 3\n"})  # publish is not fooled: it reads the log
    assert manifest["sequence"] == 3 and manifest["previous"]["sequence"] == 2
    assert [r.sequence for r in logged_releases(s.rel.entries(s.rel.checkpoint(s.key.public).size))] == [1, 2, 3]
    assert (s.rel.root / "latest").read_text().strip() == path.name


def test_release_dir_resigned_with_a_swapped_key(s):
    other = SecretKey.generate()
    (s.rel.root / "wheelproof.pub").write_text(other.public.minisign())
    for path in s.paths:
        data = path.read_bytes()
        path.with_suffix(".json.minisig").write_text(minisign_sign(other, data, "wheelproof release"))
    text = (s.rel.log / "checkpoint").read_text().split("\n\n")[0] + "\n"
    (s.rel.log / "checkpoint").write_text(sign_note(other, s.rel.origin, text))
    before = s.state.read_bytes()
    refused(s, s.verify(s.paths[1]), "no valid signature", before)
    refused(s, s.verify(s.paths[1], key=s.rel.root / "wheelproof.pub"), "inside the release directory", before)
    out = s.verify(s.paths[1], key=False)  # no key given and none configured: never the release dir's
    refused(s, out, "no trusted release key", before)
    publish_refused(s, "is not the release key")


def test_checkpoint_signed_by_another_key(s):
    text = (s.rel.log / "checkpoint").read_text().split("\n\n")[0] + "\n"
    (s.rel.log / "checkpoint").write_text(sign_note(SecretKey.generate(), s.rel.origin, text))
    before = s.state.read_bytes()
    refused(s, s.verify(s.paths[1]), "no valid signature by wheelproof.local/releases", before)
    publish_refused(s, "no valid signature")


def test_verifier_state_from_another_key_is_refused(s, tmp_path):
    text = s.state.read_text().split("\n\n")[0] + "\n"
    s.state.write_text(sign_note(SecretKey.generate(), s.rel.origin, text))
    refused(s, s.verify(s.paths[1]), "the pinned checkpoint is not a checkpoint of log", s.state.read_bytes())


def test_manifest_replayed_under_a_higher_sequence(s):
    before = s.state.read_bytes()
    first = s.paths[0]
    for n in (3, 4):
        replay = first.with_name(f"{n:06d}-" + first.name.split("-", 1)[1])
        shutil.copy(first, replay)
        shutil.copy(first.with_suffix(".json.minisig"), replay.with_suffix(".json.minisig"))
        refused(s, s.verify(replay), "a manifest replayed under another name", before)
    publish_refused(s, "000004-.* is not in the log")
    s.paths[0].with_name("000004-" + first.name.split("-", 1)[1]).unlink()
    # number 3 is the next one: never logged, so removed as an interrupted publish's, never kept beside it
    path, manifest = s.publish(**{"extra.py": "X = 3\n"})
    assert manifest["sequence"] == 3 and path.read_bytes() != first.read_bytes()
    assert len(list(s.rel.manifests.glob("000003-*.json"))) == 1


def test_log_tile_edited(s):
    bundle = next(p for p in (s.rel.log / "tile" / "entries").rglob("*") if p.is_file() and p.name == "6")
    data = bundle.read_bytes()
    bundle.write_bytes(data.replace(b'"sequence":2', b'"sequence":3'))
    before = s.state.read_bytes()
    refused(s, s.verify(s.paths[1]), "the log was rewritten", before)
    publish_refused(s, "the log was rewritten")


def test_log_forked_and_resigned_with_the_real_key(s):
    """Even the key holder (or a thief of the key) cannot rewrite history a verifier has seen."""
    entries = s.rel.entries(6)
    forked = entries[:1] + [entries[2], entries[1]] + entries[3:]  # same size, different history
    shutil.rmtree(s.rel.log / "tile")
    tlog.write_tiles(s.rel.log, forked)
    cp = Checkpoint(s.rel.origin, 6, tlog.root([tlog.leaf_hash(e) for e in forked]))
    (s.rel.log / "checkpoint").write_text(sign_note(s.key, s.rel.origin, cp.text()))
    before = s.state.read_bytes()
    refused(s, s.verify(s.paths[1]), "the log forked", before)
    publish_refused(s, "the log forked")


def test_crash_after_the_manifest_before_the_log(s, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here
    with monkeypatch.context() as m:  # only this patch is undone: the world fixture's settings stay
        m.setattr(Releases, "_append", crash)
        with pytest.raises(KeyboardInterrupt):
            s.publish(**{"extra.py": "X = 3\n"})
    assert len(list(s.rel.manifests.glob("000003-*.json"))) == 1  # written, never logged
    path, manifest = s.publish(**{"extra.py": "X = 4\n"})
    assert manifest["sequence"] == 3 and [p.name for p in s.rel.manifests.glob("000003-*.json")] == [path.name]
    assert [r.sequence for r in logged_releases(s.rel.entries(9))] == [1, 2, 3]
    assert s.verify(path).returncode == 0


def test_crash_after_the_log_before_latest(s, monkeypatch):
    from pipeline.trust import pinned

    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(pinned.PinnedCheckpoint, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            s.publish(**{"extra.py": "X = 3\n"})
    assert (s.rel.root / "latest").read_text().strip() == s.paths[1].name  # not updated
    before = s.state.read_bytes()
    refused(s, s.verify(), "names release 2, but the log's newest release is 3", before)
    path, manifest = s.publish(**{"extra.py": "X = 4\n"})
    assert manifest["sequence"] == 4 and manifest["previous"]["sequence"] == 3  # never a second release 3
    assert [r.sequence for r in logged_releases(s.rel.entries(s.rel.checkpoint(s.key.public).size))] == [1, 2, 3, 4]
    out = s.verify()
    assert out.returncode == 0 and "verified: release 4" in out.stdout


def test_two_publishers_at_once(s):
    with open(s.rel.root / ".publish.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        publish_refused(s, "another publish holds")


def test_manifest_edited_keeps_its_old_signature(s):
    doc = json.loads(s.paths[1].read_bytes())
    doc["wheels"][0]["sha256"] = "0" * 64
    s.paths[1].write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
    before = s.state.read_bytes()
    refused(s, s.verify(s.paths[1]), "signature does not match", before)
    publish_refused(s, "is not the manifest the log holds for release 2")


def test_verify_release_makes_the_stores_car_when_it_is_not_made_and_checks_it(s):
    """Without --car the verifier uses the local store's CAR of the released root, made now if it was
    never made (or was deleted); a made CAR that was tampered with is made again from the verified store
    blocks, and the signed SHA-256 still decides."""
    car_file = s.snaps[-1].car_path
    good = car_file.read_bytes()
    car_file.unlink()
    out = s.verify(s.paths[-1])
    assert out.returncode == 0 and "verified: release 2" in out.stdout, out.stderr
    assert car_file.read_bytes() == good
    car_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    out = s.verify(s.paths[-1])
    assert out.returncode == 0 and car_file.read_bytes() == good, out.stderr
    before = s.state.read_bytes()
    out = s.verify(s.paths[-1], "--car", str(s.world.root / "missing.car"))
    assert out.returncode == 1 and "missing.car" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert s.state.read_bytes() == before
