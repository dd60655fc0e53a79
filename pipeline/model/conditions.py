"""Build conditions: how upstream built its wheel, declared so a rebuild can reproduce it bit for bit.

A wheel's bytes depend on more than its sources: the backend stamps members with file mtimes or
``SOURCE_DATE_EPOCH``, converts them in the build machine's time zone (``zipfile.ZipInfo.from_file``
uses local time), takes permission bits from the filesystem (so the umask leaks in) and reads the
clock for files it generates. ``[build.conditions]`` states those conditions as reviewable data, each
with the evidence it was inferred from (``pipeline/wheel/conditions.py`` infers them in ``declare``)::

    [build.conditions]
    timestamps = "sdist"          # SOURCE_DATE_EPOCH unset: files keep the sdist's mtimes
                                  # ("checkout": every source file carries `checkout`, a fresh clone's time)
    utc-offset = 120              # the build machine's zone, minutes east of UTC (TZ in the sandbox)
    umask = "022"                 # the umask of the checkout and the build
    modes = "sdist"               # extracted files keep the sdist's permission bits (g+w included)
    clock = 1793531978            # a frozen clock for the backend (libfaketime) and the files it writes
    written = { "top_level.txt" = 1793531974 }  # files the build wrote earlier than the clock, by name
    host = "windows"              # the backend runs as on Windows: CRLF text mode, zip host 0, stat modes

    [build.conditions.evidence]
    timestamps = "47 of 47 members found in the sdist carry its mtime (2 s zip resolution)"
    ...

The conditions are hashed into the derivation (they change the output); the rebuilt bytes are
exactly what the backend wrote under them. Absent, a build runs as before: ``SOURCE_DATE_EPOCH`` from
``[build] source-date-epoch``, ``TZ=UTC``, umask 022, the sdist's modes as ``tarfile``'s ``data``
filter leaves them, the real clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.model.limits import ZIP_EPOCH_MAX, ZIP_EPOCH_MIN

__all__ = ["CONDITION_KEYS", "TIMESTAMPS", "BuildConditions", "parse_conditions", "tz_string"]

TIMESTAMPS = ("source-date-epoch", "sdist", "checkout")
MODES = ("filtered", "sdist")
CONDITION_KEYS = ("timestamps", "checkout", "utc-offset", "umask", "modes", "clock", "written", "host")
HOSTS = ("windows",)
MAX_WRITTEN = 64  # named files in ``written``: a backend generates a handful
MIN_OFFSET, MAX_OFFSET = -12 * 60, 14 * 60  # the zones in use (UTC-12 .. UTC+14)

FieldPath = tuple[str | int, ...]
Report = Callable[[FieldPath, str], None]


@dataclass(frozen=True)
class BuildConditions:
    """``[build.conditions]``: each field ``None`` when not declared (the default applies)."""

    timestamps: str | None = None   # "source-date-epoch" (default), "sdist" or "checkout"
    checkout: int | None = None     # with timestamps = "checkout": the mtime of every source file
    utc_offset: int | None = None   # minutes east of UTC
    umask: str | None = None        # three octal digits, e.g. "022"
    modes: str | None = None        # "filtered" (default) or "sdist"
    clock: int | None = None        # seconds since the epoch, frozen for the backend
    written: tuple[tuple[str, int], ...] | None = None  # (file name, stamp) of files written before the clock
    host: str | None = None         # "windows": the backend sees Windows' text mode, zip host and stat modes
    evidence: tuple[tuple[str, str], ...] = ()  # (condition key, why it was inferred)

    def declared(self) -> dict[str, str | int | dict[str, int]]:
        """The declared conditions by their TOML key (what the derivation hashes)."""
        values: dict[str, str | int | dict[str, int] | None] = {
            "timestamps": self.timestamps, "checkout": self.checkout, "utc-offset": self.utc_offset,
            "umask": self.umask, "modes": self.modes, "clock": self.clock,
            "written": dict(self.written) if self.written is not None else None,
            "host": self.host}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def stamps_from_files(self) -> bool:
        """No SOURCE_DATE_EPOCH: the backend stamps members from file mtimes."""
        return self.timestamps in ("sdist", "checkout")

    def umask_value(self, default: str) -> str:
        return self.umask if self.umask is not None else default

    def describe(self) -> str:
        """One line for a verdict: which conditions the build ran under."""
        parts = []
        if self.timestamps == "sdist":
            parts.append("sdist mtimes")
        if self.timestamps == "checkout":
            parts.append(f"checkout mtimes {self.checkout}")
        if self.utc_offset:
            parts.append(f"TZ {tz_label(self.utc_offset)}")
        if self.umask is not None:
            parts.append(f"umask {self.umask}")
        if self.modes == "sdist":
            parts.append("sdist modes")
        if self.clock is not None:
            parts.append(f"frozen clock {self.clock}")
        if self.written:
            n = len(self.written)
            parts.append(f"{n} file{'s' if n > 1 else ''} written earlier")
        if self.host is not None:
            parts.append(f"{self.host} host")
        return ", ".join(parts)


def tz_label(offset: int) -> str:
    sign = "+" if offset >= 0 else "-"
    return f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def tz_string(offset: int) -> str:
    """A POSIX ``TZ`` value for a fixed offset (POSIX counts west as positive, hence the sign flip)."""
    west = -offset
    sign = "-" if west < 0 else "+"
    return f"<{tz_label(offset)}>{sign}{abs(west) // 60:02d}:{abs(west) % 60:02d}"


def parse_conditions(table: dict[str, Any], problem: Report, fp: FieldPath) -> BuildConditions:
    """``[build.conditions]`` checked key by key; every problem is reported at its field."""
    for key in table:
        if key not in (*CONDITION_KEYS, "evidence"):
            problem(fp + (key,), f"unknown condition; expected one of {', '.join(CONDITION_KEYS)}, evidence")
    timestamps = _choice(table, "timestamps", TIMESTAMPS, problem, fp)
    modes = _choice(table, "modes", MODES, problem, fp)
    offset = _int(table, "utc-offset", MIN_OFFSET, MAX_OFFSET, problem, fp)
    if offset is not None and offset % 15:
        problem(fp + ("utc-offset",), f"must be a multiple of 15 minutes, got {offset}")
        offset = None
    clock = _int(table, "clock", ZIP_EPOCH_MIN, ZIP_EPOCH_MAX, problem, fp)
    checkout = _int(table, "checkout", ZIP_EPOCH_MIN, ZIP_EPOCH_MAX, problem, fp)
    if (timestamps == "checkout") != ("checkout" in table):
        problem(fp + ("checkout",), 'give checkout (epoch seconds) exactly when timestamps = "checkout"')
        checkout = None
    umask = table.get("umask")
    if umask is not None and (not isinstance(umask, str) or len(umask) != 3
                              or any(c not in "01234567" for c in umask)):
        problem(fp + ("umask",), f'must be three octal digits as a string, e.g. "022"; got {umask!r}')
        umask = None
    written = _written(table, problem, fp)
    if written is not None and clock is None:
        problem(fp + ("written",), "written stamps files the build wrote before its clock: declare clock too")
        written = None
    host = _choice(table, "host", HOSTS, problem, fp)
    conditions = BuildConditions(timestamps, checkout, offset, umask, modes, clock, written, host,
                                 _evidence(table, problem, fp))
    given = dict(conditions.evidence)
    for key in conditions.declared():
        if not given.get(key):
            problem(fp + ("evidence", key), "each declared condition needs its evidence (what it was inferred "
                                            "from, or why it was set by hand)")
    for key in given:
        if key not in conditions.declared():
            problem(fp + ("evidence", key), "evidence for a condition that is not declared")
    return conditions


def _choice(table: dict[str, Any], key: str, allowed: tuple[str, ...], problem: Report,
            fp: FieldPath) -> str | None:
    value = table.get(key)
    if value is not None and value not in allowed:
        problem(fp + (key,), f"must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
        return None
    return value


def _int(table: dict[str, Any], key: str, low: int, high: int, problem: Report, fp: FieldPath) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problem(fp + (key,), f"must be an integer between {low} and {high}; got {value!r}")
        return None
    return value


def _written(table: dict[str, Any], problem: Report, fp: FieldPath) -> tuple[tuple[str, int], ...] | None:
    """``written = { "top_level.txt" = T, ... }``: a file name (no directory) and the epoch second the
    backend wrote it at, before the frozen clock's moment (upstream's build took that long)."""
    value = table.get("written")
    if value is None:
        return None
    if not isinstance(value, dict) or not value or len(value) > MAX_WRITTEN:
        problem(fp + ("written",), f"expected a table of 1 to {MAX_WRITTEN} file names, each = epoch seconds")
        return None
    out = []
    for name, when in value.items():
        if not name or "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
            problem(fp + ("written", name), "must be a bare file name (no directory, no control characters)")
        elif (not isinstance(when, int) or isinstance(when, bool)
              or not ZIP_EPOCH_MIN <= when <= ZIP_EPOCH_MAX):
            problem(fp + ("written", name), f"must be an integer between {ZIP_EPOCH_MIN} and {ZIP_EPOCH_MAX}; "
                                            f"got {when!r}")
        else:
            out.append((name, when))
    return tuple(sorted(out)) if len(out) == len(value) else None


def _evidence(table: dict[str, Any], problem: Report, fp: FieldPath) -> tuple[tuple[str, str], ...]:
    evidence = table.get("evidence", {})
    if not isinstance(evidence, dict):
        problem(fp + ("evidence",), "expected a table: condition = \"what it was inferred from\"")
        return ()
    out = []
    for key, text in evidence.items():
        if not isinstance(text, str):
            problem(fp + ("evidence", key), "expected a string")
        else:
            out.append((key, text))
    return tuple(sorted(out))
