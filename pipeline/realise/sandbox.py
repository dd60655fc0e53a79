"""The build sandbox: bubblewrap, unprivileged, offline, with a made-up system view and limits.

Whoever runs the pipeline (root included), a sandboxed command runs as uid/gid 1000 (``builder``) in
a new user namespace with every capability dropped (``--cap-drop ALL``), no further user namespaces
(``--disable-userns``) and ``PR_SET_NO_NEW_PRIVS`` (bubblewrap always sets it: setuid binaries do not
elevate). It cannot remount anything: ``mount -o remount,rw`` fails with EPERM, and the read-only binds
stay read-only. When root runs the pipeline the builder is host uid 0 underneath, which file modes
favour: so ``/proc/sys`` (bubblewrap leaves it writable; ``kernel.core_pattern`` is global) and the other
writable global ``/proc`` files are bound read-only. Bubblewrap itself is started with an empty
environment, so ``/proc/1/environ`` (the namespace's init is bubblewrap) holds nothing of the host; the
command's environment is exactly what the caller gives (``--clearenv`` then ``--setenv``).

Inside: ``/usr`` (and the merged-/usr symlinks) read-only; an ``/etc`` made for the sandbox (passwd and
group naming the builder, hosts, nsswitch.conf, and from the host only what the dynamic loader and
Debian's command alternatives need: ld.so.cache, ld.so.conf(.d), alternatives) — no shadow, no certs;
the Python installation read-only at its own path (see below); size-limited private ``/tmp``,
``/var/tmp`` and HOME; the caller's binds (inputs read-only; the source tree and ``/out`` writable, at
fixed paths); new network, PID, IPC, UTS and cgroup namespaces.

What the sandbox can still learn of the host: ``/proc/self/mountinfo`` lists each bind's source path
within its filesystem — ``/usr``, the Python prefix and the run's staging directory (a fresh
``$TMPDIR/wheelproof-*``, never the store or the repository: callers stage there). The Python prefix is
bound at its own path because the interpreter loads ``libpython`` through a RUNPATH naming that path
and its build-time ``sysconfig`` data names it too; binding it elsewhere breaks the interpreter and
C-extension builds.

Limits (``pipeline.model.limits.Limits``) are enforced by ``pipeline.realise.supervise``. If bubblewrap
cannot run, building fails with instructions; building without a sandbox needs the explicit opt-out
``WHEELPROOF_UNSANDBOXED=1`` (``Unsandboxed``: same limits, no isolation), and the build record says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

from pipeline.model.errors import SandboxError
from pipeline.model.limits import Limits
from pipeline.realise.supervise import RunResult, supervise

__all__ = ["BUILDER_UID", "HOME", "UNSANDBOXED_ENV", "VIOLATIONS", "Bind", "Bubblewrap", "RunResult", "Sandbox",
           "Unsandboxed", "base_python", "bwrap_problem", "classify_violation", "open_sandbox", "python_prefix",
           "sandbox_specification", "staging_dir", "unsandboxed_requested"]

UNSANDBOXED_ENV = "WHEELPROOF_UNSANDBOXED"
HOME = "/home/builder"
BUILDER_UID = 1000
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_HOST_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives")
_ETC = {
    "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
              f"builder:x:{BUILDER_UID}:{BUILDER_UID}:builder:{HOME}:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nbuilder:x:{BUILDER_UID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost wheelproof\n::1 localhost\n",
    "hostname": "wheelproof\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
# Writable by file mode to host uid 0 — which the builder is, through its user namespace, when the pipeline
# runs as root — and not namespaced (kernel.core_pattern would run a program on the host): read-only.
_PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/mtrr", "/proc/pressure")
_TMPFS_SIZE = 1 << 30  # each of /tmp, /var/tmp, /home: memory-backed, so at most 1 GiB

# What a process prints when the sandbox stopped it reaching out.
VIOLATIONS = {
    "network": ("Network is unreachable", "Temporary failure in name resolution", "Name or service not known",
                "[Errno 101]", "[Errno -3]", "[Errno -2] Name", "[Errno 99]"),
    "write outside the build directory": ("Read-only file system", "[Errno 30]"),
}


def base_python() -> Path:
    """The real interpreter behind this (possibly virtual) environment."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


def python_prefix() -> Path:
    return Path(sys.base_prefix).resolve()


def staging_dir() -> Path:
    """Where runs stage their binds: a neutral temporary directory, not the store or the repository."""
    return Path(tempfile.gettempdir())


def unsandboxed_requested() -> bool:
    return os.environ.get(UNSANDBOXED_ENV, "") not in ("", "0")


def classify_violation(log: str) -> str | None:
    """Name the sandbox rule a failed build's log shows it broke, if any."""
    for kind, needles in VIOLATIONS.items():
        if any(n in log for n in needles):
            return kind
    return None


@dataclass(frozen=True)
class Bind:
    host: Path
    inside: str
    writable: bool = False


class Sandbox(Protocol):
    """Runs one command with binds, an exact environment, limits, a timeout and a capped log."""

    binds: Sequence[Bind]

    @property
    def mode(self) -> str:
        """What the build record says about isolation."""
        ...

    def path(self, inside: str) -> str:
        """Where a bound path is, as the command sees it."""
        ...

    def run(self, command: list[str], *, env: dict[str, str], limits: Limits, timeout: float,
            log_path: Path) -> RunResult:
        """Run ``command``, appending its output to ``log_path``; the whole tree is gone when it returns."""
        ...


def _writable_roots(binds: Sequence[Bind]) -> list[Path]:
    return [b.host for b in binds if b.writable]


@cache
def _bwrap() -> str | None:
    return shutil.which("bwrap")


@cache
def bwrap_problem() -> str | None:
    """None if bubblewrap can start an unprivileged namespace sandbox here, else why not."""
    exe = _bwrap()
    if exe is None:
        return "bubblewrap (bwrap) is not installed: run `make setup` or `apt-get install bubblewrap`"
    proc = subprocess.run([exe, *_isolation(), *_system_binds(), "--", "/bin/true"], capture_output=True,
                          text=True, env={})
    if proc.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {proc.stderr.strip()}"
    return None


def _isolation() -> list[str]:
    return ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(BUILDER_UID), "--gid",
            str(BUILDER_UID), "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv",
            "--hostname", "wheelproof"]


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _MERGED_USR:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    return args


def _etc_args() -> tuple[list[str], list[int]]:
    """A made-up /etc: each file handed to bwrap through a memfd (so no host path shows)."""
    args, fds = ["--dir", "/etc"], []
    for name, text in _ETC.items():
        fd = os.memfd_create(f"etc-{name}")
        os.write(fd, text.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
        args += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
    for name in _HOST_ETC:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args, fds


def _proc_read_only() -> list[str]:
    return [a for p in _PROC_READ_ONLY if os.path.exists(p) for a in ("--ro-bind", p, p)]


@dataclass
class Bubblewrap:
    """The sandbox: bubblewrap as described in this module's docstring."""

    binds: Sequence[Bind]
    mode: str = "bubblewrap"

    def path(self, inside: str) -> str:
        return inside

    def argv(self, command: list[str], env: dict[str, str]) -> tuple[list[str], list[int]]:
        problem = bwrap_problem()
        exe = _bwrap()
        if problem or exe is None:
            raise SandboxError(f"no sandbox: {problem}; to build without one, set {UNSANDBOXED_ENV}=1 "
                               "(recorded in the build record)")
        prefix = str(python_prefix())
        etc, fds = _etc_args()
        size = str(_TMPFS_SIZE)
        args = [exe, *_isolation(), *_system_binds(), *etc, "--ro-bind", prefix, prefix,
                "--dev", "/dev", "--proc", "/proc", *_proc_read_only(), "--size", size, "--tmpfs", "/tmp",
                "--size", size, "--tmpfs", "/var/tmp", "--size", size, "--tmpfs", "/home", "--dir", HOME]
        for b in self.binds:
            args += ["--bind" if b.writable else "--ro-bind", str(b.host), b.inside]
        args += ["--remount-ro", "/", "--chdir", "/"]
        for key, value in sorted({"HOME": HOME, "TMPDIR": "/tmp", "USER": "builder", **env}.items()):
            args += ["--setenv", key, value]
        return args + ["--", *command], fds

    def run(self, command: list[str], *, env: dict[str, str], limits: Limits, timeout: float,
            log_path: Path) -> RunResult:
        argv, fds = self.argv(command, env)
        try:
            # bwrap's own environment is empty: the sandbox's init (bwrap) shows it in /proc/1/environ.
            return supervise(argv, env={}, limits=limits, timeout=timeout, log_path=log_path,
                             watch=_writable_roots(self.binds), pass_fds=fds)
        finally:
            for fd in fds:
                os.close(fd)


@dataclass
class Unsandboxed:
    """The explicit opt-out (``WHEELPROOF_UNSANDBOXED=1``): the same limits and log, no isolation."""

    binds: Sequence[Bind]
    mode: str = "none (explicit opt-out)"

    def path(self, inside: str) -> str:
        for b in self.binds:
            if inside == b.inside or inside.startswith(b.inside + "/"):
                return str(b.host) + inside[len(b.inside):]
        return inside

    def run(self, command: list[str], *, env: dict[str, str], limits: Limits, timeout: float,
            log_path: Path) -> RunResult:
        home = log_path.parent / "home"
        home.mkdir(exist_ok=True)
        full = {"HOME": str(home), "TMPDIR": str(log_path.parent), **env}
        return supervise(command, env=full, limits=limits, timeout=timeout, log_path=log_path,
                         watch=_writable_roots(self.binds))


def sandbox_specification(unsandboxed: bool) -> dict[str, object]:
    """The sandbox as data, without host paths (hashed into every derivation id).

    Bubblewrap's isolation flags, the system binds it makes (by inside path), the made-up ``/etc``,
    the read-only ``/proc`` files, the tmpfs size and the builder's identity; for the explicit opt-out,
    only that. Host-specific facts (bubblewrap's version, the kernel) are recorded, not hashed."""
    if unsandboxed:
        return {"mode": "none (explicit opt-out)"}
    return {"mode": "bubblewrap", "isolation": _isolation(), "usr": "/usr", "merged_usr": list(_MERGED_USR),
            "etc": _ETC, "host_etc": list(_HOST_ETC), "proc_read_only": list(_PROC_READ_ONLY),
            "tmpfs": {"size": _TMPFS_SIZE, "paths": ["/tmp", "/var/tmp", "/home"]}, "home": HOME,
            "uid": BUILDER_UID, "root": "read-only", "python_prefix": "read-only, at its own path"}


def open_sandbox(binds: Sequence[Bind]) -> Sandbox:
    """The sandbox this run uses: bubblewrap, or nothing when ``WHEELPROOF_UNSANDBOXED=1`` asks for it."""
    return Unsandboxed(binds) if unsandboxed_requested() else Bubblewrap(binds)
