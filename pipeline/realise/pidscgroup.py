"""A pids cgroup for one run (Linux control groups, ``pids`` controller; v1 and v2).

``RLIMIT_NPROC`` does not bind processes whose real uid is the host's root (the kernel exempts
``INIT_USER``), and a build started by root runs, through its user namespace, as host uid 0. So when
the pipeline runs as root, the process limit is a child pids cgroup (``pids.max``); the same cgroup
lets the host kill every process of the run, whatever session it moved to. As another user, creating
cgroups is usually not allowed, and ``RLIMIT_NPROC`` applies instead.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["PidsCgroup"]


def _own_pids_dir() -> Path | None:
    """The directory of this process's pids cgroup, if the controller is mounted."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        membership = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = {line.split(":", 2)[2] for line in membership if line.split(":")[1].split(",").count("pids")}
    v2 = {line.split(":", 2)[2] for line in membership if line.startswith("0::")}
    for line in mounts:
        fields = line.split()
        sep = fields.index("-")
        fstype, options, point = fields[sep + 1], fields[sep + 3], fields[4]
        if fstype == "cgroup" and "pids" in options.split(",") and v1:
            return Path(point + next(iter(v1)))
        if fstype == "cgroup2" and v2:
            d = Path(point + next(iter(v2)))
            try:
                if "pids" in (d / "cgroup.subtree_control").read_text().split():
                    return d
            except OSError:
                return None
    return None


class PidsCgroup:
    """A fresh child cgroup with ``pids.max``; ``join`` runs in the child before exec."""

    def __init__(self, path: Path):
        self.path = path
        self.procs = str(path / "cgroup.procs")

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """A new cgroup limited to ``max_pids`` tasks, or None where this process may not make one."""
        if os.geteuid() != 0:
            return None
        parent = _own_pids_dir()
        if parent is None:
            return None
        path = parent / f"wheelproof-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError:
            return None
        try:
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            path.rmdir()
            return None
        return cls(path)

    def join(self) -> None:
        """Move the calling process into the cgroup (async-signal-safe enough for preexec_fn)."""
        fd = os.open(self.procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self.procs).read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup until it is empty (a fork can race one pass)."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)  # the last tasks are still being reaped
