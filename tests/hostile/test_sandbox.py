"""Hostile builds: a backend that attacks the host from inside the sandbox is contained, and says so.

The pipeline runs these as whoever runs the tests (root in CI and `make snapshot`): the build must hold no
privilege, see nothing of the host, and be stopped by its limits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.model.limits import Limits
from pipeline.realise.rebuild import build
from pipeline.realise.sandbox import Bind, Bubblewrap, Unsandboxed, python_prefix
from pipeline.realise.supervise import TIMEOUT_STATUS
from tests.conftest import REPO, needs_bwrap

from .conftest import limits_table

pytestmark = [pytest.mark.integration, needs_bwrap]


def built(world, hook: str, limits: str = "", **spec: object) -> tuple[dict, str]:
    decl = world.declare_tiny(hook=hook, test_table=limits, **spec)
    record = build(decl, world.store, log=lambda m: None)
    return record, world.store.read_compressed(record.log.sha256).decode(errors="replace")


def test_build_is_unprivileged_and_cannot_remount(world):
    prefix = python_prefix()
    hook = f"""
import os, subprocess
status = open("/proc/self/status").read()
print("ids", os.getuid(), os.getgid(), [l for l in status.splitlines() if l.startswith("CapEff")])
for target in ("/etc", "/inputs", "/usr", {str(prefix)!r}):
    r = subprocess.run(["mount", "-o", "remount,rw,bind", target], capture_output=True, text=True)
    print("remount", target, r.returncode, r.stderr.strip().splitlines()[:1])
open({str(prefix / "wheelproof-pwned")!r}, "w").write("pwned")
"""
    record, log = built(world, hook)
    assert record.verdict == "failed" and record.violation == "write outside the build directory"
    assert "ids 1000 1000 ['CapEff:\\t0000000000000000']" in log
    for target in ("/etc", "/inputs", "/usr", str(prefix)):
        assert f"remount {target} 32 ['mount: {target}: must be superuser" in log
    assert not (prefix / "wheelproof-pwned").exists()


@pytest.mark.parametrize("target", ["/etc/wheelproof-pwned", "/inputs/sdist/pwned", "/usr/wheelproof-pwned"])
def test_writes_to_system_and_inputs_are_refused(world, target):
    record, _ = built(world, f"open({target!r}, 'w').write('pwned')\n")
    assert record.verdict == "failed" and record.violation == "write outside the build directory"
    assert "Read-only file system" in record.error
    assert not Path("/etc/wheelproof-pwned").exists() and not Path("/usr/wheelproof-pwned").exists()


def test_setuid_is_refused(world):
    # mount(8) is setuid root on the host; inside, no_new_privs and nosuid keep it the builder's.
    hook = ("import os, subprocess\n"
            "r = subprocess.run(['mount', '-t', 'tmpfs', 'x', '/out'], capture_output=True, text=True)\n"
            "print('setuid mount', r.returncode, r.stderr.strip().splitlines()[:1])\n"
            "os.setuid(0)\n")
    record, log = built(world, hook)
    assert record.verdict == "failed"
    assert record.error == "OSError: [Errno 22] Invalid argument"  # uid 0 does not exist in the sandbox
    assert "setuid mount 32 ['mount: /out: must be superuser to use mount.']" in log


def test_proc_sys_is_read_only(world):
    # kernel.hostname is namespaced, so harmless to try; a writable /proc/sys would also let the builder
    # (host uid 0 when root runs the pipeline) write global ones such as kernel.core_pattern.
    before = Path("/proc/sys/kernel/hostname").read_text()
    hook = ("import subprocess\nr = subprocess.run(['find', '/proc/sys', '-writable', '-type', 'f'], "
            "capture_output=True, text=True)\nprint('writable', len(r.stdout.split()))\n"
            "open('/proc/sys/kernel/hostname', 'w').write('pwned')\n")
    record, log = built(world, hook)
    assert record.verdict == "failed" and "Read-only file system" in record.error
    assert "writable 0\n" in log
    assert Path("/proc/sys/kernel/hostname").read_text() == before


def test_etc_is_made_up_and_has_no_shadow(world):
    hook = "print('passwd', open('/etc/passwd').read().split())\nopen('/etc/shadow').read()\n"
    record, log = built(world, hook)
    assert record.verdict == "failed"
    assert record.error == "FileNotFoundError: [Errno 2] No such file or directory: '/etc/shadow'"
    assert "builder:x:1000:1000:builder:/home/builder:/bin/sh" in log
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines()} - {"root", "nobody"}
    assert not [u for u in host_users if f"'{u}:" in log]


def test_host_environment_and_paths_do_not_reach_the_build(world, monkeypatch):
    monkeypatch.setenv("WHEELPROOF_HOST_SECRET", "s3cr3t-value-from-the-host")
    hook = """
import os
print("pid1", open("/proc/1/environ", "rb").read())
print("env", sorted(os.environ))
print(open("/proc/self/mountinfo").read())
"""
    record, log = built(world, hook)
    assert record.verdict == "identical"  # the wheel holds nothing of it either: it is upstream's bytes
    assert "pid1 b''" in log
    assert "s3cr3t-value-from-the-host" not in log and "WHEELPROOF_HOST_SECRET" not in log
    for host_path in (str(REPO), str(world.store_root), str(world.root)):
        assert host_path not in log, host_path


def test_fork_bomb_is_stopped_by_the_process_limit(world):
    hook = """
import os, time
children = 0
try:
    for _ in range(2000):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
finally:
    print("forked", children, flush=True)
"""
    started = time.monotonic()
    record, log = built(world, hook, limits_table(processes=64))
    assert record.verdict == "failed"
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in log
    forked = int(log.split("forked ", 1)[1].split()[0])
    assert forked < 64
    assert time.monotonic() - started < 60  # the sleeping children died with the sandbox


def test_memory_hog_is_stopped(world):
    record, _ = built(world, "hog = bytearray(2 << 30)\n", limits_table(memory="512MiB"))
    assert record.verdict == "failed" and record.error == "MemoryError"


def test_file_size_limit(world):
    record, _ = built(world, "open('big', 'wb').write(bytes(64 << 20))\n", limits_table(**{"file-size": "8MiB"}))
    assert record.verdict == "failed" and "[Errno 27] File too large" in record.error


def test_workspace_limit(world):
    hook = "for i in range(40):\n    open(f'f{i}', 'wb').write(bytes(4 << 20))\nimport time\ntime.sleep(30)\n"
    record, _ = built(world, hook, limits_table(workspace="64MiB"))
    assert record.verdict == "failed"
    assert record.error == f"wheelproof: stopped: wrote more than the workspace limit ({64 << 20} bytes)"


def test_infinite_output_is_stopped_and_the_log_capped(world):
    hook = "import sys\nwhile True:\n    sys.stdout.write('x' * 1000 + '\\n')\n"
    record, log = built(world, hook, limits_table(output="16MiB", **{"log-kept": "64KiB"}))
    assert record.verdict == "failed"
    assert record.error == f"wheelproof: stopped: printed more than the output limit ({16 << 20} bytes)"
    assert "[wheelproof: log cut:" in log
    assert len(log) < 2 * (64 << 10) + 4096  # two phases' logs at most, each capped


@pytest.mark.parametrize("member,limits,message", [
    (40 << 20, limits_table(extracted="16MiB"), "unpacks to over 16777216 bytes (the extracted limit)"),
    (20 << 20, "", "unpacks to over 200 times its size (a decompression bomb?)"),
])
def test_sdist_decompression_bomb_is_refused_before_it_is_written(world, member, limits, message):
    record, _ = built(world, "", limits, sdist_files={"bomb.bin": "\0" * member})
    assert record.verdict == "failed" and record.error == f"wheelproof: tiny-1.0.tar.gz {message}"


@pytest.mark.parametrize("box", [Bubblewrap, Unsandboxed])
def test_timeout_kills_the_grandchildren(tmp_path, box):
    out = tmp_path / "out"
    out.mkdir()
    sandbox = box([Bind(out, "/out", writable=True)])
    pidfile = sandbox.path("/out/grandchild")
    script = (f"import subprocess, time\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
              f"open({pidfile!r}, 'w').write(str(p.pid))\ntime.sleep(300)\n")
    marker = f"wheelproof-timeout-test-{os.getpid()}"
    started = time.monotonic()
    result = sandbox.run([sys.executable if box is Unsandboxed else str(Path(sys.base_prefix) / "bin/python3"),
                          "-c", script, marker], env={"PATH": "/usr/bin:/bin"}, limits=Limits(), timeout=2,
                         log_path=tmp_path / "log")
    assert result.status == TIMEOUT_STATUS and result.stopped == "timed out after 2s"
    assert time.monotonic() - started < 20
    assert "wheelproof: stopped: timed out after 2s" in (tmp_path / "log").read_text()
    time.sleep(0.2)
    leftovers = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    if box is Unsandboxed:  # the grandchild left the session; its host pid must be gone too
        pid = int((out / "grandchild").read_text())
        assert not Path(f"/proc/{pid}").exists() or "sleep" not in Path(f"/proc/{pid}/cmdline").read_text()
