"""Derivations realised in the real sandbox (bubblewrap): verdicts, violations, up-to-dateness."""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.realise.rebuild import build, derivation, load_record
from pipeline.realise.sandbox import classify_violation

from .conftest import REPO, SDE, needs_bwrap

pytestmark = [pytest.mark.integration, needs_bwrap]


def test_identical_rebuild_is_recorded(world):
    decl = world.declare_tiny()
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "identical"
    assert record.output.sha256 == decl.wheels[0].sha256
    assert record.sandbox == "bubblewrap"
    stored = load_record(world.store, derivation(decl).id)
    assert stored == record
    assert "prepared tiny-1.0.tar.gz" in world.store.read_compressed(record.log.sha256).decode()
    assert set(record.references) >= {decl.sdist.sha256, decl.wheels[0].sha256, record.log.sha256}
    assert record.determinism is None  # only checked when not identical


def test_equivalent_when_only_zip_metadata_differs(world):
    decl = world.declare_tiny(upstream_sde=SDE + 86400)
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "equivalent"
    assert "date_time" in record.comparison["zip_metadata_differs"]
    assert record.determinism["deterministic"] is True


def test_differs_lists_members_and_diffs_text(world):
    decl = world.declare_tiny(mutate_upstream=True)
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "differs"
    assert "tiny.py" in record.comparison["content_differs"]
    diff = record.comparison["diff"]
    assert "--- upstream/tiny.py" in diff and "-X = 2" in diff and "+X = 1" in diff


NETWORK_HOOK = """
import socket
s = socket.create_connection(("151.101.0.223", 443), timeout=5)
"""

ESCAPE_HOOK = """
import pathlib
pathlib.Path(__file__).resolve().parent.parent.joinpath("escaped.txt").write_text("outside")
"""


@pytest.mark.parametrize("hook,violation", [(NETWORK_HOOK, "network"),
                                            (ESCAPE_HOOK, "write outside the build directory")])
def test_sandbox_violations_fail_the_build(world, hook, violation):
    decl = world.declare_tiny(hook=hook)
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "failed"
    assert record.violation == violation
    assert "Traceback" in record.log_tail
    assert not list(world.root.rglob("escaped.txt"))


def test_hook_writing_home_and_tmp_is_private(world):
    hidden = [str(REPO), str(world.store_root), str(world.dist), "/root/.cache"]
    hook = ("import os, pathlib\npathlib.Path(os.environ['HOME'], 'x').write_text('1')\n"
            "pathlib.Path('/tmp/x').write_text('1')\nassert 'WHEELPROOF_STORE' not in os.environ\n"
            f"for p in {hidden!r}:\n    assert not pathlib.Path(p).exists(), p\n")
    decl = world.declare_tiny(hook=hook)
    assert build(decl, world.store, log=lambda m: None).verdict == "identical"


def test_classify_violation():
    assert classify_violation("OSError: [Errno 101] Network is unreachable") == "network"
    assert classify_violation("OSError: [Errno 30] Read-only file system: '/x'") == \
        "write outside the build directory"
    assert classify_violation("SyntaxError: bad") is None


def test_doit_build_is_a_noop_the_second_time_and_reruns_on_change(world):
    decl = world.declare_tiny()
    first = world.doit("build:tiny")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "build:tiny 1.0: identical" in first.stdout
    second = world.doit("build:tiny")
    assert second.returncode == 0 and "-- build:tiny" in second.stdout and "identical" not in second.stdout
    # a declaration change is a new derivation
    decl.path.write_text(decl.path.read_text() + '\n[build.environment]\nFOO = { value = "1", reason = "test" }\n')
    third = world.doit("build:tiny")
    assert third.returncode == 0 and "build:tiny 1.0: identical" in third.stdout
    listing = world.doit(command="list")
    assert "build:tiny" in listing.stdout


def test_failed_build_fails_the_task_with_the_log_tail(world):
    world.declare_tiny(hook="raise SystemExit('the backend gave up')")
    result = world.doit("build:tiny")
    assert result.returncode != 0
    assert "failed" in result.stdout and "the backend gave up" in result.stdout + result.stderr


def test_unsandboxed_needs_the_opt_out_and_is_recorded(world, monkeypatch):
    decl = world.declare_tiny()
    monkeypatch.setenv("WHEELPROOF_UNSANDBOXED", "1")
    record = build(decl, world.store, log=lambda m: None)
    assert record.sandbox == "none (explicit opt-out)"
    assert record.verdict == "identical"
    monkeypatch.delenv("WHEELPROOF_UNSANDBOXED")
    assert derivation(decl).id != record.derivation_id


def test_missing_sandbox_is_a_clear_error(world, tmp_path):
    world.declare_tiny()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python3", "sh"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {**world.env(), "PATH": str(bin_dir)}
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipeline", "build", "tiny"], env=env,
                            capture_output=True, text=True, cwd=world.root)
    assert result.returncode == 1
    assert "no sandbox: bubblewrap (bwrap) is not installed" in result.stderr
    assert "WHEELPROOF_UNSANDBOXED=1" in result.stderr
