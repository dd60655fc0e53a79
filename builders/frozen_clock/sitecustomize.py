"""Start-up hook of a backend run at a frozen clock (``[build.conditions] clock``); runs inside the sandbox.

libfaketime (preloaded by build_wheel.py) freezes the clock every process reads, but the kernel stamps
the files a process writes with the real time. A backend that zips the files it generated (setuptools'
dist-info) takes their mtimes from ``os.stat``: here ``os.stat``, ``os.lstat`` and ``os.fstat`` report
the frozen time for every file written since the build started (``WHEELPROOF_CLOCK_SINCE``, read off
the kernel's own stamp), as they would read on a machine whose clock stood at that time. Files from the
sdist are older and keep their mtimes. Nothing the backend writes is changed.
"""

from __future__ import annotations

import os

__all__: list[str] = []

_CLOCK_NS = int(os.environ["WHEELPROOF_CLOCK"]) * 1_000_000_000
_SINCE_NS = int(os.environ["WHEELPROOF_CLOCK_SINCE"])
_HIDDEN = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize",
           "st_blocks", "st_rdev", "st_flags", "st_gen", "st_birthtime", "st_birthtime_ns")
_TIMES = {7: "st_atime", 8: "st_mtime", 9: "st_ctime"}


def _frozen(result: os.stat_result) -> os.stat_result:
    if result.st_mtime_ns < _SINCE_NS:
        return result
    values = list(result)
    extra = {k: getattr(result, k) for k in _HIDDEN if hasattr(result, k)}
    for index, name in _TIMES.items():
        if getattr(result, f"{name}_ns") >= _SINCE_NS:
            values[index] = _CLOCK_NS // 1_000_000_000
            extra[name] = _CLOCK_NS / 1e9
            extra[f"{name}_ns"] = _CLOCK_NS
    return os.stat_result(values, extra)


def _wrap(real):  # type: ignore[no-untyped-def]
    def stat(*args, **kwargs):  # type: ignore[no-untyped-def]
        return _frozen(real(*args, **kwargs))
    stat.__doc__, stat.__name__ = real.__doc__, real.__name__
    return stat


os.stat, os.lstat, os.fstat = _wrap(os.stat), _wrap(os.lstat), _wrap(os.fstat)  # type: ignore[assignment]
