"""The build sandbox: bubblewrap with no network and a read-only, minimal system.

Inside: a read-only root holding only /usr, /etc and the library directories,
the Python installation (read-only), and the binds a caller asks for (inputs
read-only; the source tree and output directory read-write, at fixed paths);
private /tmp and HOME; a cleared environment; new user, network, PID, IPC and
UTS namespaces. Nothing of /root, /home, the repository or the store is visible.

If bubblewrap cannot run, building fails with instructions; building without a
sandbox needs the explicit opt-out ``WHEELPROOF_UNSANDBOXED=1``, and the build
record says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pipeline.model.errors import SandboxError

UNSANDBOXED_ENV = "WHEELPROOF_UNSANDBOXED"
HOME = "/home/builder"
_SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")

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


@cache
def bwrap_problem() -> str | None:
    """None if bubblewrap can start a namespace sandbox here, else why not."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed: run `make setup` or `apt-get install bubblewrap`"
    proc = subprocess.run([exe, "--unshare-all", *_system_binds(), "--", "true"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {proc.stderr.strip()}"
    return None


def _system_binds() -> list[str]:
    args = []
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    return args


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


@dataclass
class Sandbox:
    """One sandboxed command: binds, a cleared environment, a time limit."""

    binds: list[Bind]
    env: dict[str, str] = field(default_factory=dict)
    unsandboxed: bool = False

    @property
    def mode(self) -> str:
        return "none (explicit opt-out)" if self.unsandboxed else "bubblewrap"

    def path(self, inside: str) -> str:
        """Where a bound path is, as the command sees it (the host path when unsandboxed)."""
        if not self.unsandboxed:
            return inside
        for b in self.binds:
            if inside == b.inside or inside.startswith(b.inside + "/"):
                return str(b.host) + inside[len(b.inside):]
        return inside

    def argv(self, command: list[str]) -> list[str]:
        if self.unsandboxed:
            return command
        problem = bwrap_problem()
        if problem:
            raise SandboxError(f"no sandbox: {problem}; to build without one, set {UNSANDBOXED_ENV}=1 "
                               "(recorded in the build record)")
        prefix = python_prefix()
        args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                "--hostname", "wheelproof", *_system_binds(), "--ro-bind", str(prefix), str(prefix),
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
                "--tmpfs", "/home", "--dir", HOME]
        for b in self.binds:
            args += ["--bind" if b.writable else "--ro-bind", str(b.host), b.inside]
        args += ["--remount-ro", "/", "--chdir", "/"]
        env = {"HOME": HOME, "TMPDIR": "/tmp", **self.env}
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        return args + ["--", *command]

    def run(self, command: list[str], *, timeout: float, log_path: Path) -> int:
        """Run ``command``, appending its output to ``log_path``; the exit status (124 on timeout)."""
        env = {"HOME": str(log_path.parent / "home"), "TMPDIR": str(log_path.parent), **self.env}
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.run(self.argv(command), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=timeout,
                                      env=env if self.unsandboxed else None, start_new_session=True)
            except subprocess.TimeoutExpired:
                log.write(f"\nwheelproof: timed out after {timeout:g}s\n".encode())
                return 124
        return proc.returncode
