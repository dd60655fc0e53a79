"""Limits, as data: what a declaration may ask for, and what one sandboxed run may use.

Declaration bounds (docs/declarations.md, "Limits") are checked when a declaration is loaded and again
where they are used (fetch), so a reviewed file can neither fill the disk nor hold the pipeline up.

Resource limits (:class:`Limits`) bound one sandboxed build or test run.

The defaults suit every package in the shipped set; a declaration raises one with a reason in its
``[build.limits]`` table (sizes as bytes or as ``"512MiB"``/``"4GiB"``)::

    [build.limits]
    reason = "links a large C++ extension"
    memory = "8GiB"

Each limit is enforced where the kernel can (``setrlimit(2)``: RLIMIT_NPROC, RLIMIT_AS, RLIMIT_CPU,
RLIMIT_FSIZE; a pids cgroup when the pipeline runs as root, where RLIMIT_NPROC does not apply) or by the
host while it watches the run (workspace size, output). ``Limits`` is a frozen dataclass so it can be
hashed into a derivation id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = [
    "MAX_ARTIFACT_SIZE",
    "MAX_DECLARATION_BYTES",
    "MAX_NESTING",
    "MAX_TEST_TIMEOUT",
    "MIN_TEST_TIMEOUT",
    "ZIP_EPOCH_MAX",
    "ZIP_EPOCH_MIN",
    "DEFAULT_LIMITS",
    "HARD_MAXIMA",
    "Limits",
    "parse_limits",
    "parse_size",
]

# One artifact (sdist, wheel, input): 1 GiB; the biggest wheels on PyPI stay below it.
MAX_ARTIFACT_SIZE = 1 << 30
# One declaration file, checked on the bytes before any TOML parser reads them.
MAX_DECLARATION_BYTES = 1 << 20
# Arrays/inline tables inside one another; the shipped declarations need 2.
MAX_NESTING = 32
# SOURCE_DATE_EPOCH must be a time the zip format (APPNOTE 4.4.6, MS-DOS date: years 1980..2107,
# two-second resolution) can hold: 1980-01-01T00:00:00Z .. 2107-12-31T23:59:59Z.
ZIP_EPOCH_MIN = 315532800
ZIP_EPOCH_MAX = 4354819199
# A test suite's timeout, in seconds: one second to one day.
MIN_TEST_TIMEOUT = 1
MAX_TEST_TIMEOUT = 86400

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """One run's limits; every field is a positive integer (bytes, seconds or a count)."""

    processes: int = 256                 # tasks in the sandbox (pids cgroup, or RLIMIT_NPROC)
    memory: int = 4 * GiB                # address space of each process (RLIMIT_AS)
    cpu_seconds: int = 1800              # CPU time of each process (RLIMIT_CPU)
    file_size: int = 1 * GiB             # largest file a process may write (RLIMIT_FSIZE)
    workspace: int = 4 * GiB             # everything the run writes into its host directories
    extracted: int = 2 * GiB             # the unpacked sdist / test source
    ratio: int = 200                     # unpacked size / archive size of the sdist, and of wheel members
    output: int = 1 * GiB                # bytes a run may print before it is stopped
    log_kept: int = 4 * MiB              # of which the log keeps the head and the tail
    result_size: int = 1 * MiB           # each phase's result JSON in /out
    wheel_size: int = 512 * MiB          # the built wheel, compressed
    wheel_unpacked: int = 2 * GiB        # the built wheel, all members uncompressed

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def rlimits(self) -> dict[str, int]:
        """The ``resource`` module's RLIMIT_* names and values each process inherits."""
        return {"RLIMIT_NPROC": self.processes, "RLIMIT_AS": self.memory, "RLIMIT_CPU": self.cpu_seconds,
                "RLIMIT_FSIZE": self.file_size}


DEFAULT_LIMITS = Limits()
# Above these a declaration is more likely hostile than big.
HARD_MAXIMA = Limits(processes=4096, memory=64 * GiB, cpu_seconds=6 * 3600, file_size=16 * GiB,
                     workspace=64 * GiB, extracted=32 * GiB, ratio=2000, output=8 * GiB, log_kept=64 * MiB,
                     result_size=16 * MiB, wheel_size=4 * GiB, wheel_unpacked=16 * GiB)
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB}
_SIZES = {"memory", "file_size", "workspace", "extracted", "output", "log_kept", "result_size", "wheel_size",
          "wheel_unpacked"}


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string such as ``"512MiB"``; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _UNITS[m.group(2)]
    return None


def parse_limits(table: Any, problem: Callable[[tuple[str | int, ...], str], None],
                 fpath: tuple[str | int, ...] = ("build", "limits")) -> Limits:
    """The limits a ``[build.limits]`` table sets over the defaults; each bad field goes to ``problem``."""
    if not isinstance(table, dict):
        problem(fpath, "expected a table of limits with a reason")
        return DEFAULT_LIMITS
    keys = {f.name.replace("_", "-"): f.name for f in fields(Limits)}
    changes: dict[str, int] = {}
    for key, value in table.items():
        if key == "reason":
            continue
        if key not in keys:
            problem(fpath + (key,), f"unknown limit (allowed: {', '.join(sorted([*keys, 'reason']))})")
            continue
        name = keys[key]
        n = parse_size(value) if name in _SIZES else (value if isinstance(value, int)
                                                        and not isinstance(value, bool) else None)
        ceiling = getattr(HARD_MAXIMA, name)
        if n is None:
            kind = "a size (bytes, or a string such as \"512MiB\")" if name in _SIZES else "an integer"
            problem(fpath + (key,), f"expected {kind}, got {value!r}")
        elif not 0 < n <= ceiling:
            problem(fpath + (key,), f"must be between 1 and {ceiling}, got {n}")
        else:
            changes[name] = n
    reason = table.get("reason")
    if changes and not (isinstance(reason, str) and reason.strip()):
        problem(fpath + ("reason",), "a table that changes limits needs a reason = \"…\" saying why")
    return replace(DEFAULT_LIMITS, **changes)
