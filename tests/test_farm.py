"""The build farm on a real ``dask scheduler`` with two workers on 127.0.0.1 (separate stores and keys)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from distributed import Client

from pipeline.farm.action import platform_resource
from pipeline.model.declaration import load_all
from pipeline.realise.graph import plan
from pipeline.realise.rebuild import derivation, load_record
from pipeline.trust.attestation import stored_attestations, stored_public_keys, verify_attestation
from pipeline.trust.builder_key import create_builder_key, load_trusted_keys
from tests.conftest import REPO
from tests.test_testing import PASSING, UNITTEST

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]

SLOW = "import time\ntime.sleep(6)\n"  # a build hook: long enough to kill something mid-build
TESTS = {"tests/__init__.py": "", "tests/test_alpha.py": "import unittest\nimport alpha\n\n" +
         PASSING.replace("tiny", "alpha")}


def _on_farm(world, farm, monkeypatch, *workers: str, trusted=None) -> None:
    for name in workers:
        farm.start_worker(name)
    for k, v in farm.env(trusted).items():
        monkeypatch.setenv(k, v)


def _trust_dir(farm, *workers: str):
    """A directory of *.pem builder public keys, as ~/.config/wheelproof/farm-trusted/ is."""
    d = farm.root / "trusted"
    d.mkdir()
    for name in workers:
        shutil.copy(farm.workers[name].public_key, d / f"{name}.pem")
    return d


def test_build_and_test_on_two_workers_verified_into_the_coordinators_store(world, farm, monkeypatch):
    world.declare_tiny("alpha", sdist_files=TESTS, test_table="\n[test]\n" + UNITTEST)
    world.declare_tiny("beta", dependencies=["alpha"])
    _on_farm(world, farm, monkeypatch, "w1", "w2")
    monkeypatch.setenv("WHEELPROOF_FARM_TRUSTED", str(_trust_dir(farm, "w1", "w2")))
    run = world.doit("build", "test")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "build:alpha 1.0: identical" in out and "build:beta 1.0: identical" in out
    assert "test:alpha 1.0: tests passed: 2 passed, 0 failed, 0 errors, 1 skipped of 3" in out
    assert "farm: 3 node(s) in" in out and "3 done, 0 failed (0 rejected)" in out and "retries 0" in out
    assert "of 3 | w" in out  # per-worker progress, by the workers' names
    decls = load_all(world.declarations)
    g = plan(decls)
    store = world.store
    for name in ("alpha", "beta"):
        record = store.read_json(store.get_ref("builds", g[f"build:{name}"].id))
        assert record["derivation_id"] == derivation(decls[name]).id
        store.verified_path(record["output"]["sha256"])  # the rebuilt wheel came back, verified
        store.read_compressed(record["log"]["sha256"])
    assert store.read_json(store.get_ref("builds", g["build:alpha"].id))["tests"]["outcome"] == "passed"
    assert store.get_ref("tests", g["test:alpha"].id) is not None
    # Each build was signed by the worker that ran it, and the coordinator stored the envelope as a local
    # build stores its own: named by the record, under refs/attestations/<drv>.<key id>, the key beside it.
    trusted = [k for w in ("w1", "w2") for k in load_trusted_keys(farm.workers[w].public_key)]
    assert set(stored_public_keys(store)) <= {k.key_id for k in trusted}
    for name in ("alpha", "beta"):
        drv, record = g[f"build:{name}"].id, load_record(store, g[f"build:{name}"].id)
        assert record is not None and record.attestation is not None and record.output is not None
        [(_, key_id, envelope)] = list(stored_attestations(store, drv))
        assert key_id == record.attestation.key_id and store.read_bytes(record.attestation.sha256) == envelope
        verified = verify_attestation(envelope, trusted, derivation_id=drv, rebuilt_sha256=record.output.sha256)
        assert verified.key_id == key_id and verified.verdict == "identical"
    shown = world.cli("attestation", "alpha", "--statement")
    assert shown.returncode == 0 and g["build:alpha"].id in shown.stdout, shown.stdout + shown.stderr
    # The workers fetched the inputs themselves: the coordinator's store never downloaded an sdist.
    assert not store.has(decls["alpha"].sdist.sha256)
    assert any(w.store_root.joinpath("objects").exists() and
               any(p.name == decls["alpha"].sdist.sha256 for p in w.store_root.rglob("*"))
               for w in farm.workers.values())
    again = world.doit("build", "test")
    assert "-- build:alpha" in again.stdout and "-- test:alpha" in again.stdout, again.stdout


def test_a_worker_killed_mid_build_is_retried_on_the_other(world, farm, monkeypatch):
    world.declare_tiny("slow", hook=SLOW)
    _on_farm(world, farm, monkeypatch, "w1", "w2")
    doit = subprocess.Popen([sys.executable, "-m", "doit", "run", "-f", str(REPO / "dodo.py"), "--db-file",
                             str(world.root / "doit.db"), "build"], env=world.env(), cwd=world.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with Client(farm.address, set_as_default=False) as client:
        deadline = time.monotonic() + 60
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            time.sleep(0.2)
        assert busy, "the build never started"
        names = {a: i["name"] for a, i in client.scheduler_info(n_workers=-1)["workers"].items()}
        time.sleep(1.5)  # inside the sandbox now
        victim = names[busy[0]]
        farm.workers[victim].kill()
    out, _ = doit.communicate(timeout=120)
    assert doit.returncode == 0, out
    survivor = ({"w1", "w2"} - {victim}).pop()
    assert f"from worker {survivor}" in out and "retries 1" in out, out
    assert "slow 1.0: identical" in out
    refs = list(world.store.list_refs("builds"))
    assert len(refs) == 1


def test_a_killed_coordinator_resumes_from_the_store(world, farm, monkeypatch):
    world.declare_tiny("alpha")
    world.declare_tiny("beta", hook=SLOW)
    _on_farm(world, farm, monkeypatch, "w1", "w2")
    g = plan(load_all(world.declarations))
    doit = subprocess.Popen([sys.executable, "-m", "doit", "run", "-f", str(REPO / "dodo.py"), "--db-file",
                             str(world.root / "doit.db"), "build"], env=world.env(), cwd=world.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while world.store.get_ref("builds", g["build:alpha"].id) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.store.get_ref("builds", g["build:alpha"].id) is not None
    assert world.store.get_ref("builds", g["build:beta"].id) is None
    doit.send_signal(signal.SIGKILL)
    doit.communicate(timeout=30)
    rerun = world.doit("build")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "-- build:alpha" in rerun.stdout  # accepted before the kill: up to date by the store
    assert "build:beta 1.0: identical" in rerun.stdout
    assert "farm: 1 node(s) in" in rerun.stderr


def test_no_worker_for_the_platform_is_a_clear_error(world, farm, monkeypatch):
    world.declare_tiny("alpha")
    _on_farm(world, farm, monkeypatch)  # a scheduler, no worker
    run = world.doit("build")
    assert run.returncode != 0
    assert f"no worker on the farm at {farm.address} builds for {platform_resource()}" in run.stderr
    assert list(world.store.list_refs("builds")) == []


def test_a_worker_whose_key_is_not_trusted_is_rejected(world, farm, monkeypatch, tmp_path):
    world.declare_tiny("alpha")
    other = create_builder_key(tmp_path / "other.key").public
    (tmp_path / "trusted.pem").write_text(other.pem())  # one file of PEM keys: not w1's
    _on_farm(world, farm, monkeypatch, "w1", trusted=tmp_path / "trusted.pem")
    before = set(world.store.iter_objects())
    run = world.doit("build")
    assert run.returncode != 0
    assert "build:alpha: result from worker 'w1' rejected: attestation" in run.stderr, run.stderr
    assert "which is not a trusted key" in run.stderr and "0 done, 1 failed (1 rejected)" in run.stderr
    assert list(world.store.list_refs("builds")) == [] and set(world.store.iter_objects()) == before
    assert not (world.store.refs / "attestations").exists() or not list(world.store.list_refs("attestations"))
