"""Infer upstream's build conditions from its wheel and sdist (``[build.conditions]``, issue 14).

Pure logic over archive metadata, with the reading of the two archives at the edge. What the backends
do (read in their sources):

- setuptools' ``bdist_wheel`` stamps each member with its file's mtime in UTC (``time.gmtime``) and its
  mode from the filesystem, and ``RECORD`` with the clock, unless ``SOURCE_DATE_EPOCH`` is set, which
  then stamps every member.
- flit_core without ``SOURCE_DATE_EPOCH`` stamps modules with their mtimes in *local* time
  (``zipfile.ZipInfo.from_file``) and dist-info files with a fixed 2016-01-01.
- hatchling, pdm-backend and poetry-core stamp a fixed or ``SOURCE_DATE_EPOCH`` time.

An sdist built from the same checkout keeps the checkout's mtimes and modes in its tar headers, so a
wheel member whose stamp is its sdist file's mtime (to the zip format's 2 seconds, shifted by a whole
time-zone offset) was stamped from the file: ``timestamps = "sdist"`` and ``utc-offset``. Members
stamped later than every source file were written during upstream's build: their stamp is the
build's ``clock``; those stamped before it (the build took seconds: setuptools writes the egg-info
files, then the dist-info, then ``RECORD`` at the clock) are ``written``, by file name. When the
modules share one stamp that is not their sdist mtime, upstream built
the wheel from a fresh clone (another than the sdist's): ``timestamps = "checkout"`` at that stamp.
Modes of generated members give the ``umask``; members that keep the sdist's group write bit need
``modes = "sdist"`` (tarfile's ``data`` filter clears it).
"""

from __future__ import annotations

import calendar
import datetime as dt
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.model.conditions import MAX_OFFSET, MIN_OFFSET, BuildConditions, tz_label

__all__ = ["SdistFile", "WheelMember", "infer_conditions", "infer_from_archives", "metadata_has_crlf",
           "read_sdist_files", "read_wheel_members", "setuptools_modes"]

MAX_SDIST_MEMBERS = 200_000
FIT_SHARE = 0.8           # members that must carry their sdist mtime to call the timestamps "sdist"
BACKEND_CONSTANTS = {(1980, 1, 1, 0, 0, 0), (2016, 1, 1, 0, 0, 0)}  # stamps backends write themselves


@dataclass(frozen=True)
class WheelMember:
    name: str
    date_time: tuple[int, int, int, int, int, int]
    mode: int   # permission bits from external_attr (0 when the zip records none)
    size: int
    create_system: int = 3  # the host system the member records (0 MS-DOS/Windows, 3 Unix)


@dataclass(frozen=True)
class SdistFile:
    path: str   # relative to the sdist's top directory
    mtime: float
    mode: int
    size: int


def read_wheel_members(wheel: Path) -> list[WheelMember]:
    with zipfile.ZipFile(wheel) as zf:
        return [WheelMember(i.filename, i.date_time, (i.external_attr >> 16) & 0o7777, i.file_size, i.create_system)
                for i in zf.infolist() if not i.is_dir()]


MAX_METADATA = 1 << 20


def metadata_has_crlf(wheel: Path) -> bool:
    """Whether the wheel's ``.dist-info/METADATA`` ends its lines with CRLF (Python's text mode on
    Windows writes them); a member larger than any real METADATA is not read."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            top, _, rest = info.filename.partition("/")
            if top.endswith(".dist-info") and rest == "METADATA" and info.file_size <= MAX_METADATA:
                with zf.open(info) as f:
                    return b"\r\n" in f.read(MAX_METADATA + 1)
    return False


def read_sdist_files(sdist: Path, filename: str | None = None) -> list[SdistFile]:
    """Regular files of a .tar.gz sdist (``filename``, default the path's name) from its headers alone
    (no member is extracted or read). A zip sdist's stamps are local times of an unknown zone: nothing
    is inferred from it."""
    if not (filename or sdist.name).endswith((".tar.gz", ".tgz", ".tar")):
        return []
    out = []
    with tarfile.open(sdist, "r:*") as tf:
        for count, member in enumerate(tf):
            if count >= MAX_SDIST_MEMBERS:
                break
            _, _, rel = member.name.partition("/")
            if member.isreg() and rel:
                out.append(SdistFile(rel, float(member.mtime), member.mode & 0o7777, member.size))
    return out


def _seconds(date_time: tuple[int, ...]) -> int:
    """A zip stamp (a naive date and time) as seconds, read as UTC."""
    return calendar.timegm((*date_time, 0, 0, 0))


def _dos_seconds(t: float) -> int:
    """What a zip's DOS stamp keeps of a time: whole seconds, rounded down to even."""
    s = int(t // 1)
    return s - s % 2


def _match(members: Iterable[WheelMember], files: list[SdistFile]) -> dict[str, SdistFile]:
    """Each wheel member's sdist file: same size, the shortest sdist path ending in the member's path."""
    by_tail: dict[str, list[SdistFile]] = {}
    for f in files:
        by_tail.setdefault(f.path.rsplit("/", 1)[-1], []).append(f)
    out = {}
    for m in members:
        base = m.name.rsplit("/", 1)[-1]
        head, sep, licensed = m.name.partition(".dist-info/licenses/")
        path = licensed if sep and "/" not in head else m.name  # PEP 639: license files copied from the source
        cands = [f for f in by_tail.get(base, ()) if f.size == m.size
                 and (f.path == path or f.path.endswith("/" + path))]
        if cands:
            out[m.name] = min(cands, key=lambda f: len(f.path))
    return out


@dataclass(frozen=True)
class _Fit:
    offset: int          # minutes east of UTC
    fitting: frozenset[str]


def _best_offset(members: list[WheelMember], matched: dict[str, SdistFile]) -> _Fit:
    stamps = {m.name: _seconds(m.date_time) for m in members if m.name in matched}
    best = _Fit(0, frozenset())
    for offset in [0, *range(MIN_OFFSET, MAX_OFFSET + 1, 15)]:
        fitting = frozenset(n for n, s in stamps.items() if _dos_seconds(matched[n].mtime + offset * 60) == s)
        if len(fitting) > len(best.fitting):
            best = _Fit(offset, fitting)
    return best


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _written_before(later: list[WheelMember], clock_local: int, offset: int) -> tuple[tuple[str, int], ...]:
    """File names stamped before the clock's moment, with their stamps (as epoch seconds): files the build
    wrote seconds before ``RECORD``, or metadata an sdist made in the same run already holds. The sandbox
    stamps only files its build writes, by name alone, so a name stamped at two moments is left alone."""
    stamps: dict[str, set[int]] = {}
    for m in later:
        stamps.setdefault(m.name.rsplit("/", 1)[-1], set()).add(_seconds(m.date_time) - offset * 60)
    clock = clock_local - offset * 60
    out = []
    for name, moments in stamps.items():
        if len(moments) == 1 and (when := next(iter(moments))) != clock:
            out.append((name, when))
    return tuple(sorted(out))


def infer_conditions(members: list[WheelMember], files: list[SdistFile],
                     crlf_metadata: bool = False) -> BuildConditions:
    """The conditions upstream's wheel shows it was built under, each with its evidence."""
    values: dict[str, str | int] = {}
    evidence: dict[str, str] = {}
    if members and all(m.create_system == 0 for m in members):
        values["host"] = "windows"
        evidence["host"] = (f"all {len(members)} members record create_system 0 (MS-DOS), as zipfile writes on "
                            "Windows" + ("; METADATA ends its lines with CRLF (text mode)" if crlf_metadata else ""))
    regular = [m for m in members if m.mode]
    matched = _match(members, files)
    stamps = Counter(m.date_time for m in members)
    fit = _Fit(0, frozenset())
    if len(stamps) > 1 and matched:
        fit = _best_offset(members, matched)
        sources = [n for n in matched if ".dist-info/" not in n]  # dist-info files the backend (re)writes
        carrying = len(fit.fitting.intersection(sources))
        if carrying and carrying >= FIT_SHARE * len(sources):
            values["timestamps"] = "sdist"
            evidence["timestamps"] = (f"{carrying} of {len(sources)} modules found in the sdist carry its "
                                      f"mtime (to the zip's 2 s); the members' stamps differ, so upstream did not "
                                      "set SOURCE_DATE_EPOCH")
            if fit.offset:
                values["utc-offset"] = fit.offset
                evidence["utc-offset"] = (f"those members carry the sdist's mtimes shifted by {tz_label(fit.offset)}: "
                                          "the backend stamped them in the uploader's local time")
    newest_source: int | None = None
    written: tuple[tuple[str, int], ...] | None = None
    if values.get("timestamps") == "sdist":
        # the newest module stamped from its sdist file (an sdist made after the wheel has newer files)
        newest_source = max(_seconds(m.date_time) for m in members if m.name in fit.fitting)
    elif len(stamps) > 1 and matched:
        modules = [m for m in members if m.name in matched and ".dist-info/" not in m.name]
        common = Counter(m.date_time for m in modules).most_common(1)
        if (len(modules) >= 2 and common and common[0][1] >= FIT_SHARE * len(modules)
                and common[0][0] not in BACKEND_CONSTANTS):
            newest_source = _seconds(common[0][0])
            fit = _Fit(0, frozenset(m.name for m in modules if m.date_time == common[0][0]))
            values["timestamps"], values["checkout"] = "checkout", newest_source
            evidence["timestamps"] = (f"{len(fit.fitting)} of {len(modules)} modules found in the sdist carry one "
                                      f"stamp, not their sdist mtimes: upstream built from a fresh clone")
            evidence["checkout"] = f"the stamp those modules carry, {_when(newest_source)}"
    if newest_source is not None:
        later = [m for m in members if m.name not in fit.fitting and m.date_time not in BACKEND_CONSTANTS
                 and _seconds(m.date_time) >= newest_source]
        if later:
            clock_local = max(_seconds(m.date_time) for m in later)
            at_clock = sum(1 for m in later if _seconds(m.date_time) == clock_local)
            values["clock"] = clock_local - fit.offset * 60
            evidence["clock"] = (f"{at_clock} of {len(later)} members newer than the sources (written during "
                                 f"upstream's build) are stamped {_when(int(values['clock']))}")
            written = _written_before(later, clock_local, fit.offset)
            if written:
                named = ", ".join(f"{n} {_when(t)}" for n, t in written[:4]) + (", ..." if len(written) > 4 else "")
                evidence["written"] = (f"{len(written)} of those members carry an earlier stamp (written seconds "
                                       f"before RECORD), by name: {named}")
    generated = [m for m in regular if m.name not in matched and not m.mode & 0o111
                 and not m.name.endswith(".dist-info/RECORD")]  # RECORD's mode is the backend's own
    modes = Counter(m.mode & 0o777 for m in generated)
    if modes:
        mode, count = modes.most_common(1)[0]
        umask = ~mode & 0o666
        if mode & 0o600 == 0o600 and not umask & 0o400:
            values["umask"] = f"{umask:03o}"
            evidence["umask"] = f"{count} of {len(generated)} members the build generated have mode {mode:04o}"
    kept = [m for m in regular if m.name in matched and m.mode & 0o022
            and m.mode & 0o777 == matched[m.name].mode & 0o777]
    if kept:
        values["modes"] = "sdist"
        evidence["modes"] = (f"{len(kept)} members keep the sdist's group or other write bit "
                             f"(e.g. {kept[0].name} {kept[0].mode & 0o777:04o}), which tarfile's data filter clears")
    return BuildConditions(
        timestamps=str(values["timestamps"]) if "timestamps" in values else None,
        checkout=int(values["checkout"]) if "checkout" in values else None,
        utc_offset=int(values["utc-offset"]) if "utc-offset" in values else None,
        umask=str(values["umask"]) if "umask" in values else None,
        modes=str(values["modes"]) if "modes" in values else None,
        clock=int(values["clock"]) if "clock" in values else None,
        written=written or None,
        host=str(values["host"]) if "host" in values else None,
        evidence=tuple(sorted(evidence.items())))


def _copies(members: list[WheelMember], files: list[SdistFile]) -> dict[str, SdistFile]:
    """Members setuptools copies keeping their source file's mode, with that file: package data (build_py's
    ``copy_file`` preserves the mode; modules it writes anew, ``preserve_mode=0``), license files and the
    egg-info files the sdist ships (egg_info rewrites them in place, bdist_wheel copies them)."""
    out = {n: f for n, f in _match(members, files).items() if not n.endswith(".py") and ".dist-info/" not in n}
    top = {f.path: f for f in files if "/" not in f.path}
    egg = {f.path.rsplit("/", 1)[-1]: f for f in files if f.path.count("/") == 1 and ".egg-info/" in f.path}
    for m in members:
        head, sep, rest = m.name.partition(".dist-info/")
        if not sep or "/" in head:
            continue
        base = rest.removeprefix("licenses/")
        source = top.get(base) if base not in ("METADATA", "WHEEL", "RECORD") else None
        if source is None and "/" not in rest and rest not in ("METADATA", "WHEEL", "RECORD"):
            source = egg.get(rest)
        if source is not None and source.size == m.size:
            out[m.name] = source
    return out


def setuptools_modes(members: list[WheelMember], files: list[SdistFile],
                     conditions: BuildConditions) -> BuildConditions:
    """``umask`` and ``modes`` of a wheel setuptools' bdist_wheel wrote, from the members it writes anew
    (``WHEEL``, always) and those it copies (:func:`_copies`), instead of from all generated members, which
    mix the two when the build's umask and the checkout's modes differ."""
    wheel_file = next((m for m in members if m.name.count("/") == 1 and m.name.endswith(".dist-info/WHEEL")
                       and m.mode), None)
    if wheel_file is None or wheel_file.mode & 0o600 != 0o600:
        return conditions
    umask = ~wheel_file.mode & 0o666
    evidence = dict(conditions.evidence)
    modules = [m for m in members if m.name.endswith(".py") and ".dist-info/" not in m.name and m.mode]
    agree = sum(1 for m in modules if m.mode & 0o777 == wheel_file.mode & 0o777)
    evidence["umask"] = (f"{wheel_file.name.rsplit('/', 1)[-1]}, which bdist_wheel writes anew, has mode "
                         f"{wheel_file.mode & 0o777:04o}, as {agree} of {len(modules)} modules "
                         "(build_py writes them anew)")
    copies = {n: f for n, f in _copies(members, files).items() if f.mode & 0o022}
    by_name = {m.name: m for m in members}
    kept = [n for n, f in copies.items() if by_name[n].mode & 0o777 == f.mode & 0o777]
    modes = conditions.modes
    if copies and kept:
        modes = "sdist"
        evidence["modes"] = (f"{len(kept)} of {len(copies)} members setuptools copies keep the sdist's group or "
                             f"other write bit (e.g. {kept[0]} {by_name[kept[0]].mode & 0o777:04o}), which "
                             "tarfile's data filter clears")
    elif copies:
        modes = None
        evidence.pop("modes", None)
    return replace(conditions, umask=f"{umask:03o}", modes=modes, evidence=tuple(sorted(evidence.items())))


SETUPTOOLS_GENERATORS = ("bdist_wheel", "setuptools")


def infer_from_archives(wheel: Path, sdist: Path, sdist_filename: str, generator: str | None) -> BuildConditions:
    """:func:`infer_conditions` over an upstream wheel and its sdist (``sdist_filename``: its real name),
    with :func:`setuptools_modes` for a wheel setuptools wrote (``generator``: its WHEEL ``Generator``,
    as the declaration records it)."""
    members, files = read_wheel_members(wheel), read_sdist_files(sdist, sdist_filename)
    conditions = infer_conditions(members, files, metadata_has_crlf(wheel))
    if (generator or "").split(" ", 1)[0] in SETUPTOOLS_GENERATORS:
        conditions = setuptools_modes(members, files, conditions)
    return conditions
