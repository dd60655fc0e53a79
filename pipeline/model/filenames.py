"""File names a declaration may give an artifact: bare names that say what the file is.

Artifacts are staged as ``<inputs>/<group>/<filename>``, so a name must be a single path
component: ASCII letters, digits and ``._+-!`` (PEP 427 / PEP 625 file names use a subset), not
starting with a dot or dash. Beyond that, sdists and wheels must parse with
``packaging.utils.parse_sdist_filename`` / ``parse_wheel_filename`` (PEP 625, PEP 427/491), and the
project's own files must carry its canonical name (PEP 503) and version (PEP 440); a test source
is any source archive.
"""

from __future__ import annotations

import re

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

__all__ = ["ARCHIVE_SUFFIXES", "archive_problem", "bare_problem", "sdist_problem", "wheel_problem"]

_BARE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+!-]*$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def bare_problem(filename: str) -> str | None:
    """Why ``filename`` is not one safe path component, or None."""
    if not filename.isascii():
        return f"has non-ASCII characters: {filename!r}"
    if not _BARE.match(filename) or ".." in filename:
        return (f"not a bare file name: {filename!r} (one path component of letters, digits and ._+!-, "
                "not starting with . or -)")
    return None


def sdist_problem(filename: str, project: str | None = None, version: str | None = None) -> str | None:
    """Why ``filename`` is not an sdist (of ``project`` ``version``, when given), or None."""
    if problem := bare_problem(filename):
        return problem
    try:
        name, ver = parse_sdist_filename(filename)
    except InvalidSdistFilename as e:
        return str(e)
    return _owner_problem("an sdist", filename, name, ver, project, version)


def wheel_problem(filename: str, project: str | None = None, version: str | None = None) -> str | None:
    """Why ``filename`` is not a wheel (of ``project`` ``version``, when given), or None."""
    if problem := bare_problem(filename):
        return problem
    try:
        name, ver, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename as e:
        return str(e)
    return _owner_problem("a wheel", filename, name, ver, project, version)


def archive_problem(filename: str) -> str | None:
    """Why ``filename`` is not a source archive name (a declared test source), or None."""
    if problem := bare_problem(filename):
        return problem
    if not filename.lower().endswith(ARCHIVE_SUFFIXES):
        return f"not a source archive: {filename!r} (expected one of {', '.join(ARCHIVE_SUFFIXES)})"
    return None


def _owner_problem(kind: str, filename: str, name: str, ver: Version, project: str | None,
                   version: str | None) -> str | None:
    if project is None or version is None:
        return None
    try:
        want = Version(version)
    except ValueError:
        return None  # the version field reports itself
    if name != canonicalize_name(project) or ver != want:
        return f"{filename!r} is not {kind} of {project} {version}"
    return None
