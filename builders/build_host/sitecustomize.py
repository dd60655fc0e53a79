"""Start-up hook reproducing upstream's build host in the backend (``[build.conditions]``); runs inside
the sandbox, in every Python process of the build phase.

- ``clock`` (``WHEELPROOF_CLOCK``): libfaketime (preloaded by build_wheel.py) freezes the clock every
  process reads, but the kernel stamps the files a process writes with the real time. A backend that
  zips the files it generated (setuptools' dist-info) takes their mtimes from ``os.stat``/``os.fstat``:
  here those report the frozen time for every file written since the build started
  (``WHEELPROOF_CLOCK_SINCE``, read off the kernel's own stamp), as they would read on a machine whose
  clock stood at that time. A file whose name ``written`` lists (``WHEELPROOF_WRITTEN``, a JSON object)
  reports the moment upstream's build wrote it instead: a build takes seconds, and setuptools writes
  the egg-info, then the dist-info, then ``RECORD`` at the clock. Files from the sdist are older and
  keep their mtimes.
- ``host = "windows"`` (``WHEELPROOF_HOST``): what CPython does differently on Windows, where a
  backend's output depends on it: files opened for writing in text mode without a ``newline``
  argument end their lines with CRLF; every ``zipfile.ZipInfo`` records host system 0 (MS-DOS; 3,
  Unix, elsewhere); ``os.stat`` reports a regular file's mode as Windows does (0666, or 0444 when
  read-only, plus 0111 for .exe/.bat/.cmd/.com), so a backend copying modes into the zip copies those.

Nothing the backend writes is changed afterwards: it writes what it would on that host.
"""

from __future__ import annotations

import builtins
import io
import json
import os

__all__: list[str] = []

_HIDDEN = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize",
           "st_blocks", "st_rdev", "st_flags", "st_gen", "st_birthtime", "st_birthtime_ns")
_TIMES = {7: "st_atime", 8: "st_mtime", 9: "st_ctime"}


def _name(path: object) -> str:
    """The file name of a stat call's argument; a descriptor's (``wheel`` stats the file it has open)
    from ``/proc/self/fd``."""
    if isinstance(path, int):
        try:
            path = os.readlink(f"/proc/self/fd/{path}")
        except OSError:
            return ""
    return os.path.basename(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""


def _wrap_stat(change) -> None:  # type: ignore[no-untyped-def]
    """``os.stat``, ``os.lstat`` and ``os.fstat`` report ``change(result, path or descriptor)``."""
    def wrap(real):  # type: ignore[no-untyped-def]
        def stat(*args, **kwargs):  # type: ignore[no-untyped-def]
            return change(real(*args, **kwargs), args[0] if args else kwargs.get("path", kwargs.get("fd")))
        stat.__doc__, stat.__name__ = real.__doc__, real.__name__
        return stat

    os.stat, os.lstat, os.fstat = wrap(os.stat), wrap(os.lstat), wrap(os.fstat)  # type: ignore[assignment]


def _freeze_stat(clock_ns: int, since_ns: int, written_ns: dict[str, int]) -> None:
    def frozen(result: os.stat_result, path: object) -> os.stat_result:
        if result.st_mtime_ns < since_ns:
            return result
        stamp_ns = written_ns.get(_name(path), clock_ns) if written_ns else clock_ns
        values = list(result)
        extra = {k: getattr(result, k) for k in _HIDDEN if hasattr(result, k)}
        for index, name in _TIMES.items():
            if getattr(result, f"{name}_ns") >= since_ns:
                values[index] = stamp_ns // 1_000_000_000
                extra[name] = stamp_ns / 1e9
                extra[f"{name}_ns"] = stamp_ns
        return os.stat_result(values, extra)

    _wrap_stat(frozen)


def _text_mode_crlf() -> None:
    real_open = io.open

    def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,  # type: ignore[no-untyped-def]
             closefd=True, opener=None):
        if newline is None and "b" not in mode and any(c in mode for c in "wax+"):
            newline = "\r\n"
        return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    open.__doc__ = real_open.__doc__
    builtins.open = io.open = open  # type: ignore[assignment]


def _zip_create_system(system: int) -> None:
    import zipfile

    real_init = zipfile.ZipInfo.__init__

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        self.create_system = system

    zipfile.ZipInfo.__init__ = __init__  # type: ignore[method-assign]


def _windows_modes() -> None:
    import stat as st

    def windows(result: os.stat_result, path: object) -> os.stat_result:
        if not st.S_ISREG(result.st_mode):
            return result
        mode = 0o666 if result.st_mode & st.S_IWUSR else 0o444
        if _name(path).lower().endswith((".exe", ".bat", ".cmd", ".com")):
            mode |= 0o111
        values = list(result)
        values[0] = st.S_IFREG | mode
        return os.stat_result(values, {k: getattr(result, k) for k in _HIDDEN if hasattr(result, k)})

    _wrap_stat(windows)


if "WHEELPROOF_CLOCK" in os.environ:
    _freeze_stat(int(os.environ["WHEELPROOF_CLOCK"]) * 1_000_000_000, int(os.environ["WHEELPROOF_CLOCK_SINCE"]),
                 {name: int(when) * 1_000_000_000
                  for name, when in json.loads(os.environ.get("WHEELPROOF_WRITTEN") or "{}").items()})
if os.environ.get("WHEELPROOF_HOST") == "windows":
    _text_mode_crlf()
    _zip_create_system(0)
    _windows_modes()
