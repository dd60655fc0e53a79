"""What crosses the sandbox boundary: the files the host takes out of a run's writable directories.

The sandbox wrote them, so each is hostile until checked. A file is opened relative to its
directory's descriptor with ``O_NOFOLLOW`` (a symbolic link is refused, so a link to the release key
is never followed), ``O_NONBLOCK`` (a FIFO cannot hang the host) and by a single path component (no
traversal); it must be a regular file with one link (a hard link would alias another file) and within
a size cap. A result JSON must parse and have the expected types; a wheel is copied out of the
sandbox's directory through the already-open descriptor and then checked as a zip archive
(``pipeline.wheel.zipcheck``). Anything else raises :class:`BoundaryError` naming the file and the
problem, which the build records as its failure.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from pipeline.model.errors import WheelproofError
from pipeline.wheel.zipcheck import ZipCaps, ZipCheckError, check_wheel_zip

__all__ = ["REJECTED_STATUS", "RESULT_FIELDS", "BoundaryError", "builder_result", "check_component",
           "check_source_tree", "open_output", "read_result", "take_wheel"]

REJECTED_STATUS = 126  # the run ended, but the host refused what it left

_CHUNK = 1 << 16
Schema = Mapping[str, type | tuple[type, ...]]


class BoundaryError(WheelproofError):
    """A file the sandbox produced is not what the host may take."""


def check_component(name: object, what: str) -> str:
    """``name`` as a single path component (no separators, not ``.``/``..``), or BoundaryError."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise BoundaryError(f"{what}: {name!r} is not a plain file name")
    return name


def open_output(directory: Path, name: str, max_bytes: int) -> tuple[int, int]:
    """An fd for ``directory/name`` (a regular, singly linked file within ``max_bytes``) and its size."""
    where = f"{directory.name}/{name}"
    check_component(name, where)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        raise BoundaryError(f"{where}: the sandbox did not write it") from None
    except OSError as e:
        kind = "a symbolic link" if e.errno == 40 else e.strerror  # ELOOP
        raise BoundaryError(f"{where}: refused ({kind}); the host takes only regular files") from e
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"is not a regular file (mode {stat.filemode(st.st_mode)})"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links (it may alias a file outside the sandbox)"
    elif st.st_size > max_bytes:
        problem = f"is {st.st_size} bytes, over the cap of {max_bytes}"
    if problem:
        os.close(fd)
        raise BoundaryError(f"{where}: {problem}")
    return fd, st.st_size


def _read_fd(fd: int, max_bytes: int, where: str) -> bytes:
    chunks, total = [], 0
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise BoundaryError(f"{where}: grew past the cap of {max_bytes} bytes while being read")
            chunks.append(chunk)
    return b"".join(chunks)


def read_result(directory: Path, name: str, max_bytes: int, schema: Schema) -> dict[str, Any]:
    """A phase's result JSON: an object whose keys in ``schema`` have the given types."""
    where = f"{directory.name}/{name}"
    fd, _ = open_output(directory, name, max_bytes)
    data = _read_fd(fd, max_bytes, where)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BoundaryError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BoundaryError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    for key, kind in schema.items():
        if key in doc and (not isinstance(doc[key], kind) or isinstance(doc[key], bool) and bool not in
                           (kind if isinstance(kind, tuple) else (kind,))):
            names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise BoundaryError(f"{where}: field {key!r} should be {names}, got {type(doc[key]).__name__}")
    return doc


def take_wheel(directory: Path, name: object, dest_dir: Path, max_bytes: int, caps: ZipCaps) -> Path:
    """Copy the wheel ``name`` out of ``directory`` into ``dest_dir`` (host-owned) and check it."""
    filename = check_component(name, f"{directory.name}/{name!r}")
    try:
        parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        raise BoundaryError(f"{directory.name}/{filename}: not a wheel file name ({e})") from None
    fd, _ = open_output(directory, filename, max_bytes)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    total = 0
    with os.fdopen(fd, "rb") as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise BoundaryError(f"{directory.name}/{filename}: grew past the cap of {max_bytes} bytes")
            out.write(chunk)
    try:
        check_wheel_zip(dest, caps, where=f"{directory.name}/{filename}")
    except ZipCheckError as e:
        dest.unlink()
        raise BoundaryError(str(e)) from e
    return dest


# Every field builders/build_wheel.py and builders/run_tests.py write into /out/<phase>.json.
RESULT_FIELDS: Schema = {
    "phase": str, "top": str, "wheel": str, "seconds": (int, float), "build_system": list, "backend": str,
    "backend_path": list, "missing_static": list, "dynamic": list, "missing_dynamic": list, "imports": dict,
    "exit_status": int, "counts": dict, "status": str, "failed_ids": list,
}


def builder_result(directory: Path, name: str, max_bytes: int) -> dict[str, Any]:
    """A builder's result JSON with every field of the expected type, down to list items and counts."""
    doc = read_result(directory, name, max_bytes, RESULT_FIELDS)
    where = f"{directory.name}/{name}"
    for key in ("build_system", "backend_path", "missing_static", "dynamic", "missing_dynamic", "failed_ids"):
        if not all(isinstance(x, str) for x in doc.get(key, [])):
            raise BoundaryError(f"{where}: field {key!r} should be a list of strings")
    counts = doc.get("counts", {})
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
               for k, v in counts.items()):
        raise BoundaryError(f"{where}: field 'counts' should map names to numbers")
    if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in doc.get("imports", {}).items()):
        raise BoundaryError(f"{where}: field 'imports' should map module names to paths")
    if "top" in doc:
        check_component(doc["top"], f"{where} field 'top'")
    return doc


def check_source_tree(extract: Path, top: object) -> Path:
    """The unpacked source tree ``extract/top``: a real directory directly under ``extract``."""
    name = check_component(top, f"{extract.name}/ (the unpacked source)")
    path = extract / name
    try:
        st = os.lstat(path)
    except OSError:
        raise BoundaryError(f"{extract.name}/{name}: the unpacked source tree is missing") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BoundaryError(f"{extract.name}/{name}: the unpacked source tree is not a directory "
                            f"(mode {stat.filemode(st.st_mode)})")
    return path
