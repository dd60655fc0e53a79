"""Run one process tree under limits and watch it from the host (setrlimit(2), killpg(2), cgroups).

The child gets the limits as rlimits before it execs (inherited by every descendant), its own process
group and session, and — when the pipeline runs as root — a pids cgroup. The host streams its output
into a capped log and stops the whole tree (the process group, and every process of the cgroup) on a
timeout, when the output or the workspace grows past its limit, and always when it returns.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.limits import Limits
from pipeline.realise.caplog import CappedLog
from pipeline.realise.pidscgroup import PidsCgroup

__all__ = ["TIMEOUT_STATUS", "LIMIT_STATUS", "RunResult", "supervise", "tree_size"]

TIMEOUT_STATUS = 124  # as timeout(1)
LIMIT_STATUS = 125
WATCH_INTERVAL = 0.5


@dataclass(frozen=True)
class RunResult:
    """How a supervised run ended."""

    status: int                 # the exit status; TIMEOUT_STATUS or LIMIT_STATUS when the host stopped it
    stopped: str | None         # why the host stopped it, if it did
    output_bytes: int           # everything it printed
    log_cut: bool               # the log kept only the head and the tail
    log_error: str | None       # writing the log failed (e.g. a full disk)
    process_limit: str          # how the process limit was enforced


def tree_size(roots: Sequence[Path], stop_above: int | None = None) -> int:
    """Bytes allocated under ``roots`` (st_blocks, so sparse files count as what they use); no symlinks followed."""
    total = 0
    stack = [str(r) for r in roots]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
        if stop_above is not None and total > stop_above:
            break
    return total


def _preexec(limits: Limits, cgroup: PidsCgroup | None) -> Callable[[], None]:
    values = [(getattr(resource, name), value) for name, value in limits.rlimits().items()]

    def apply() -> None:
        if cgroup is not None:
            cgroup.join()
        for which, value in values:
            resource.setrlimit(which, (value, value))
    return apply


def supervise(argv: list[str], *, env: dict[str, str], limits: Limits, timeout: float, log_path: Path,
              watch: Sequence[Path] = (), pass_fds: Sequence[int] = ()) -> RunResult:
    """Run ``argv`` with exactly ``env``; append its (capped) output to ``log_path``."""
    cgroup = PidsCgroup.create(limits.processes)
    how = (f"pids cgroup (pids.max {limits.processes})" if cgroup else f"RLIMIT_NPROC {limits.processes}")
    stopped: str | None = None
    with open(log_path, "ab") as fh:
        log = CappedLog(fh, limits.log_kept)
        if cgroup is None and os.geteuid() == 0:
            how = "not enforced (running as root without a pids cgroup; RLIMIT_NPROC does not bind root)"
            log.write(f"wheelproof: warning: process limit {how}\n".encode())
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=_preexec(limits, cgroup), pass_fds=tuple(pass_fds),
                                    close_fds=True)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        assert proc.stdout is not None
        too_much = threading.Event()

        def drain() -> None:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 1 << 16):
                if not too_much.is_set():
                    log.write(chunk)
                    if log.total > limits.output:
                        too_much.set()
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        next_watch = 0.0
        try:
            while True:
                try:
                    proc.wait(timeout=WATCH_INTERVAL / 5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if too_much.is_set():
                    stopped = f"printed more than the output limit ({limits.output} bytes)"
                elif now > deadline:
                    stopped = f"timed out after {timeout:g}s"
                elif watch and now > next_watch:
                    next_watch = now + WATCH_INTERVAL
                    if tree_size(watch, limits.workspace) > limits.workspace:
                        stopped = f"wrote more than the workspace limit ({limits.workspace} bytes)"
                if stopped:
                    break
        finally:
            _kill_tree(proc, cgroup)
            reader.join(timeout=5)
            proc.stdout.close()
            if cgroup is not None:
                cgroup.remove()
        if not stopped and watch and tree_size(watch, limits.workspace) > limits.workspace:
            stopped = f"wrote more than the workspace limit ({limits.workspace} bytes)"
        status = (TIMEOUT_STATUS if stopped.startswith("timed out") else LIMIT_STATUS) if stopped else proc.returncode
        note = f"\nwheelproof: stopped: {stopped}\n" if stopped else ""
        log.close(note)
    error = f"writing the log {log_path.name} failed: {log.error.strerror}" if log.error else None
    return RunResult(status, stopped, log.total, bool(log.cut), error, how)


def _kill_tree(proc: subprocess.Popen[bytes], cgroup: PidsCgroup | None) -> None:
    """SIGKILL the run's process group (and its cgroup), then reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cgroup is not None:
        cgroup.kill_all()
    proc.wait()
