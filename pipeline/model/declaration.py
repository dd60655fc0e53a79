"""Declaration format v1: one TOML file per project (see docs/declarations.md).

Files live at ``declarations/<shard>/<canonical-name>.toml`` where the shard is
the first two characters of the canonical name (PEP 503 normalisation), like
nixpkgs' ``pkgs/by-name``. Loading validates every field and reports every
problem of every file at once, each with file, line and field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, sys_tags
from packaging.utils import (
    canonicalize_name,
    is_normalized_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pipeline.model import limits
from pipeline.model.conditions import BuildConditions, parse_conditions
from pipeline.model.errors import DeclarationError, Problem
from pipeline.model.filenames import archive_problem, sdist_problem, wheel_problem
from pipeline.model.limits import DEFAULT_LIMITS, Limits, parse_limits
from pipeline.model.locations import DECLARATIONS_DIR, DECLARATIONS_ENV, NON_DECLARATIONS  # noqa: F401  (re-exported)
from pipeline.model.tomlguard import control_problem, guarded_loads, iter_strings, read_bounded
from pipeline.model.urlpolicy import url_problem

SCHEMA = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)  # PEP 508 names
FieldPath = tuple[str | int, ...]


def shard_of(name: str) -> str:
    return canonicalize_name(name)[:2]


def path_for(name: str, root: Path = DECLARATIONS_DIR) -> Path:
    canonical = canonicalize_name(name)
    return root / shard_of(canonical) / f"{canonical}.toml"


@dataclass(frozen=True)
class Artifact:
    """A file pinned by content: fetched only if its SHA-256 and size match.

    Every declared artifact has a size; only ``declare`` handles unsized ones (from an index page
    without sizes) until the download tells it the size.
    """

    filename: str
    url: str
    sha256: str
    size: int | None = None
    reason: str | None = None  # only for override inputs


@dataclass(frozen=True)
class EnvOverride:
    name: str
    value: str
    reason: str


@dataclass(frozen=True)
class BuildSpec:
    backend: str
    backend_path: tuple[str, ...]
    requires: tuple[str, ...]
    generator: str | None
    source_date_epoch: int
    inputs: tuple[Artifact, ...]
    extra_inputs: tuple[Artifact, ...] = ()
    environment: tuple[EnvOverride, ...] = ()
    limits: Limits = DEFAULT_LIMITS  # [build.limits]: raised with a reason (pipeline/model/limits.py)
    # [build] config-settings: PEP 517 config_settings passed to the backend (a value is a str or a list of str)
    config_settings: tuple[tuple[str, str | tuple[str, ...]], ...] = ()
    # [build.conditions]: how upstream built its wheel, reproduced (pipeline/model/conditions.py)
    conditions: BuildConditions = BuildConditions()

    def config_settings_json(self) -> dict[str, str | list[str]]:
        """The PEP 517 ``config_settings`` dict, as the frontend passes it to the backend's hooks."""
        return {k: v if isinstance(v, str) else list(v) for k, v in self.config_settings}

    @property
    def all_inputs(self) -> tuple[Artifact, ...]:
        return self.inputs + self.extra_inputs


@dataclass(frozen=True)
class Deselection:
    target: str
    reason: str


@dataclass(frozen=True)
class TestSpec:
    __test__ = False  # not a pytest class

    requires: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    source: Artifact | None = None
    deselect: tuple[Deselection, ...] = ()
    ignore: tuple[Deselection, ...] = ()
    known_failure: str | None = None  # the reason some tests are expected to fail...
    timeout: int = 600
    inputs: tuple[Artifact, ...] = ()
    known_failing: tuple[str, ...] = ()  # ...and exactly which (pytest node ids)
    environment: tuple[EnvOverride, ...] = ()  # [test.environment]: set for the test run only


@dataclass(frozen=True)
class Declaration:
    path: Path
    name: str
    version: str
    requires_python: str | None
    extras: tuple[str, ...]
    dependencies: tuple[str, ...]
    sdist: Artifact
    wheels: tuple[Artifact, ...]
    build: BuildSpec
    test: TestSpec | None = None
    unsupported: tuple[Deselection, ...] = ()  # environment patterns left out on purpose, with reasons
    accept_differs: str | None = None  # why a rebuild that differs from upstream may still be published
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # `rebuild = false` with `rebuild-reason`: upstream's bytes are published as such, never rebuilt here
    no_rebuild: str | None = None

    @property
    def rebuilds(self) -> bool:
        return self.no_rebuild is None

    @property
    def canonical_name(self) -> str:
        return canonicalize_name(self.name)

    def line_of(self, *fpath: str | int) -> int | None:
        """The line of a field in this declaration's file (for messages about it), if it can be read."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        lines = field_lines(text)
        if fpath and isinstance(fpath[-1], int) and fpath[:-1] in lines:
            return _item_line(text, lines[fpath[:-1]], fpath[-1])
        for n in range(len(fpath), 0, -1):
            if fpath[:n] in lines:
                return lines[fpath[:n]]
        return None

    def wheel_for_build(self) -> Artifact:
        """The upstream wheel the rebuild is compared with: the one whose tags this machine supports best."""
        rank = _sys_tag_rank()
        scored = []
        for w in self.wheels:
            _, _, _, wtags = parse_wheel_filename(w.filename)
            best = min((rank[t] for t in wtags if t in rank), default=None)
            if best is not None:
                scored.append((best, w.filename, w))
        if not scored:
            raise DeclarationError(
                [Problem(self.path, None, "wheels", "no upstream wheel is installable on this build platform")]
            )
        return min(scored)[2]


@cache
def _sys_tag_rank() -> dict[Tag, int]:
    """This interpreter's supported tags, most preferred first (computed once: it is on doit's hot path)."""
    return {t: i for i, t in enumerate(sys_tags())}


# -- locating fields in the source text --------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.-]+)\s*=")


def _split_key(key: str) -> list[str]:
    return [p.strip().strip("\"'") for p in key.split(".")]


def field_lines(text: str) -> dict[FieldPath, int]:
    """Map each table header and key to its 1-based line (best effort, for messages)."""
    lines: dict[FieldPath, int] = {}
    counters: dict[tuple[str, ...], int] = {}
    table: FieldPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m and not _KEY.match(line):
            parts = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                index = counters.get(parts, 0)
                counters[parts] = index + 1
                table = parts + (index,)
            else:
                table = parts
            lines.setdefault(table, number)
            continue
        k = _KEY.match(line)
        if k:
            lines.setdefault(table + tuple(_split_key(k.group(1))), number)
    return lines


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')


def _item_line(text: str, key_line: int, index: int) -> int:
    """The line of item ``index`` of a string array whose key is on ``key_line`` (best effort, for
    messages: comments are skipped; the key's line if the item is not found)."""
    seen = -1
    all_lines = text.splitlines()
    for number in range(key_line, len(all_lines) + 1):
        line = all_lines[number - 1]
        if number == key_line:
            line = line.split("=", 1)[1]
        code = _STRING.sub("\0", line).split("#", 1)[0]  # strings as one mark each, comments dropped
        seen += code.count("\0")
        if seen >= index:
            return number
        if "]" in code:
            break
    return key_line


def _render(path: FieldPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


class _Reader:
    """Typed access to a parsed document that records problems instead of raising."""

    def __init__(self, path: Path, text: str, problems: list[Problem]):
        self.path = path
        self.text = text
        self._lines: dict[FieldPath, int] | None = None  # computed only when a problem needs a line
        self.problems = problems

    def line(self, fpath: FieldPath) -> int | None:
        if self._lines is None:
            self._lines = field_lines(self.text)
        for n in range(len(fpath), 0, -1):
            if fpath[:n] in self._lines:
                return self._lines[fpath[:n]]
        return None

    def problem(self, fpath: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.path, self.line(fpath), _render(fpath), message))

    def check_keys(self, table: dict[str, Any], allowed: Iterable[str], fpath: FieldPath) -> None:
        allowed = set(allowed)
        for key in table:
            if key not in allowed:
                self.problem(fpath + (key,), f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], fpath: FieldPath,
            required: bool = True, default: Any = None) -> Any:
        if key not in table:
            if required:
                self.problem(fpath + (key,), "missing required field")
            return default
        value = table[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.problem(fpath + (key,), f"expected {names}, got {type(value).__name__} {value!r}")
            return default
        return value

    def str_list(self, table: dict[str, Any], key: str, fpath: FieldPath, required: bool = False) -> list[str]:
        values = self.get(table, key, list, fpath, required=required, default=[])
        out = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                out.append(v)
            else:
                self.problem(fpath + (key, i), f"expected string, got {type(v).__name__}")
        return out

    def table(self, table: dict[str, Any], key: str, fpath: FieldPath, required: bool = True) -> dict[str, Any]:
        return self.get(table, key, dict, fpath, required=required, default={}) or {}

    def tables(self, table: dict[str, Any], key: str, fpath: FieldPath, required: bool = False) -> list[dict]:
        values = self.get(table, key, list, fpath, required=required, default=[])
        out = []
        for i, v in enumerate(values):
            if isinstance(v, dict):
                out.append(v)
            else:
                self.problem(fpath + (key, i), f"expected a table, got {type(v).__name__}")
        return out


def _artifact(r: _Reader, t: dict[str, Any], fpath: FieldPath, kind: str, *, project: str | None = None,
              version: str | None = None, reason_required: bool = False,
              filename_required: bool = True) -> Artifact | None:
    """One pinned file; ``kind`` is ``sdist``, ``wheel`` or ``archive`` (a test source)."""
    allowed = ["filename", "url", "sha256", "size"] + (["reason"] if reason_required else [])
    r.check_keys(t, allowed, fpath)
    filename = r.get(t, "filename", str, fpath, required=filename_required, default=None)
    url = r.get(t, "url", str, fpath)
    sha256 = r.get(t, "sha256", str, fpath)
    size = r.get(t, "size", int, fpath)
    reason = r.get(t, "reason", str, fpath, required=reason_required)
    ok = True
    if url is not None and (problem := url_problem(url)):
        r.problem(fpath + ("url",), problem)
        ok = False
    if sha256 is not None and not _HEX64.match(sha256):
        r.problem(fpath + ("sha256",), "must be 64 lowercase hex digits")
        ok = False
    if size is not None and not 0 < size <= limits.MAX_ARTIFACT_SIZE:
        r.problem(fpath + ("size",), f"must be a byte count between 1 and {limits.MAX_ARTIFACT_SIZE}, got {size}")
        ok = False
    name_field = "filename"
    if filename is None and url is not None and not filename_required:
        filename, name_field = url.rsplit("/", 1)[-1].split("#", 1)[0].split("?", 1)[0], "url"
    if filename is not None:
        if kind == "wheel":
            problem = wheel_problem(filename, project, version)
        elif kind == "sdist":
            problem = sdist_problem(filename, project, version)
        else:
            problem = archive_problem(filename)
        if problem:
            r.problem(fpath + (name_field,), problem)
            ok = False
    if not ok or None in (filename, url, sha256, size):
        return None
    return Artifact(filename, url, sha256, size, reason)


def _unique(r: _Reader, items: list[tuple[FieldPath, Artifact]]) -> None:
    """No file name and no sha256 twice in one list (they would be staged over one another)."""
    seen: dict[tuple[str, str], FieldPath] = {}
    for fpath, a in items:
        for key in ("filename", "sha256"):
            value = getattr(a, key)
            if (key, value) in seen:
                r.problem(fpath + (key,), f"listed twice (also at {_render(seen[key, value])}): {value}")
            else:
                seen[key, value] = fpath


def _artifacts(r: _Reader, t: dict[str, Any], key: str, fpath: FieldPath, kind: str, *, required: bool = False,
               reason_required: bool = False, **owner: str | None) -> list[tuple[FieldPath, Artifact]]:
    out = []
    for i, item in enumerate(r.tables(t, key, fpath, required=required)):
        p = fpath + (key, i)
        a = _artifact(r, item, p, kind, reason_required=reason_required, **owner)  # type: ignore[arg-type]
        if a:
            out.append((p, a))
    return out


def _requirements(r: _Reader, t: dict[str, Any], key: str, fpath: FieldPath, required: bool) -> list[str]:
    values = r.str_list(t, key, fpath, required=required)
    for i, v in enumerate(values):
        try:
            Requirement(v)
        except InvalidRequirement as e:
            r.problem(fpath + (key, i), f"not a PEP 508 requirement: {e}")
    return values


def _reasoned(r: _Reader, t: dict[str, Any], key: str, fpath: FieldPath) -> tuple[Deselection, ...]:
    out = []
    for i, item in enumerate(r.tables(t, key, fpath)):
        p = fpath + (key, i)
        r.check_keys(item, ["target", "reason"], p)
        target = r.get(item, "target", str, p)
        reason = r.get(item, "reason", str, p)
        if target and reason:
            out.append(Deselection(target, reason))
    return tuple(out)


def _build(r: _Reader, t: dict[str, Any]) -> BuildSpec | None:
    fp: FieldPath = ("build",)
    r.check_keys(t, ["backend", "backend-path", "requires", "generator", "source-date-epoch", "inputs",
                     "extra-inputs", "environment", "limits", "config-settings", "conditions"], fp)
    backend = r.get(t, "backend", str, fp)
    backend_path = r.str_list(t, "backend-path", fp)
    for i, entry in enumerate(backend_path):
        parts = entry.replace("\\", "/").split("/")
        if entry.startswith("/") or "\\" in entry or ".." in parts or not entry:
            r.problem(fp + ("backend-path", i), f"must be a relative path inside the source tree (PEP 517), "
                                                f"got {entry!r}")
    requires = _requirements(r, t, "requires", fp, required=True)
    generator = r.get(t, "generator", str, fp, required=False)
    sde = r.get(t, "source-date-epoch", int, fp)
    if isinstance(sde, int) and not limits.ZIP_EPOCH_MIN <= sde <= limits.ZIP_EPOCH_MAX:
        r.problem(fp + ("source-date-epoch",), f"must be between {limits.ZIP_EPOCH_MIN} and {limits.ZIP_EPOCH_MAX} "
                                              "(1980-01-01 .. 2107-12-31, what a zip timestamp can hold)")
        sde = None
    located = _artifacts(r, t, "inputs", fp, "wheel", required=True)
    located += _artifacts(r, t, "extra-inputs", fp, "wheel", reason_required=True)
    _unique(r, located)  # both are staged in one directory
    inputs = [a for p, a in located if p[1] == "inputs"]
    extra = [a for p, a in located if p[1] == "extra-inputs"]
    env = []
    for key, value in r.table(t, "environment", fp, required=False).items():
        p = fp + ("environment", key)
        if not _ENV_NAME.match(key):
            r.problem(p, "not an environment variable name")
        elif not isinstance(value, dict):
            r.problem(p, "expected a table {value = \"…\", reason = \"…\"}")
        else:
            r.check_keys(value, ["value", "reason"], p)
            v = r.get(value, "value", str, p)
            reason = r.get(value, "reason", str, p)
            if v is not None and reason is not None:
                env.append(EnvOverride(key, v, reason))
    names = [parse_wheel_filename(a.filename)[0] for a in inputs + extra]
    for n in sorted({n for n in names if names.count(n) > 1}):
        r.problem(fp + ("inputs",), f"more than one input wheel of project {n}")
    run_limits = parse_limits(t["limits"], r.problem, fp + ("limits",)) if "limits" in t else DEFAULT_LIMITS
    config_settings = _config_settings(r, t, fp)
    conditions = parse_conditions(r.table(t, "conditions", fp, required=False), r.problem, fp + ("conditions",))
    if backend is None or sde is None:
        return None
    return BuildSpec(backend, tuple(backend_path), tuple(requires), generator, sde, tuple(inputs), tuple(extra),
                     tuple(sorted(env, key=lambda e: e.name)), run_limits, config_settings, conditions)


def _test(r: _Reader, t: dict[str, Any]) -> TestSpec:
    fp: FieldPath = ("test",)
    r.check_keys(t, ["requires", "command", "source", "deselect", "ignore", "known-failure", "timeout",
                     "inputs", "environment"], fp)
    requires = _requirements(r, t, "requires", fp, required=False)
    command = r.str_list(t, "command", fp)
    source = None
    if "source" in t:
        s = r.table(t, "source", fp)
        source = _artifact(r, s, fp + ("source",), "archive", filename_required=False)
    known, failing = _known_failure(r, t.get("known-failure"), fp + ("known-failure",))
    timeout = r.get(t, "timeout", int, fp, required=False, default=600)
    if not limits.MIN_TEST_TIMEOUT <= timeout <= limits.MAX_TEST_TIMEOUT:
        r.problem(fp + ("timeout",), f"must be between {limits.MIN_TEST_TIMEOUT} and {limits.MAX_TEST_TIMEOUT} "
                                     f"seconds, got {timeout}")
    located = _artifacts(r, t, "inputs", fp, "wheel")
    _unique(r, located)
    inputs = [a for _, a in located]
    return TestSpec(tuple(requires), tuple(command), source, _reasoned(r, t, "deselect", fp),
                    _reasoned(r, t, "ignore", fp), known, timeout, tuple(inputs), failing,
                    _test_environment(r, t, fp))


def _known_failure(r: _Reader, value: object, fp: FieldPath) -> tuple[str | None, tuple[str, ...]]:
    """``known-failure = { reason = "…", tests = ["path::test", …] }``: why, and exactly which tests fail."""
    if value is None:
        return None, ()
    if not isinstance(value, dict):
        r.problem(fp, 'expected { reason = "…", tests = ["tests/test_x.py::test_y", …] }: name the test ids '
                      "expected to fail, so any other failure (or one of them passing) fails the run")
        return None, ()
    r.check_keys(value, ["reason", "tests"], fp)
    reason = r.get(value, "reason", str, fp)
    tests = r.str_list(value, "tests", fp, required=True)
    if "tests" in value and not tests:
        r.problem(fp + ("tests",), "name at least one test id")
    return reason, tuple(tests)


def _test_environment(r: _Reader, t: dict[str, Any], fp: FieldPath) -> tuple[EnvOverride, ...]:
    env = []
    for key, value in r.table(t, "environment", fp, required=False).items():
        p = fp + ("environment", key)
        if not _ENV_NAME.match(key) or not isinstance(value, dict):
            r.problem(p, 'expected NAME = {value = "…", reason = "…"}')
            continue
        r.check_keys(value, ["value", "reason"], p)
        v, reason = r.get(value, "value", str, p), r.get(value, "reason", str, p)
        if v is not None and reason is not None:
            env.append(EnvOverride(key, v, reason))
    return tuple(sorted(env, key=lambda e: e.name))


TOP_LEVEL = ["schema", "name", "version", "requires-python", "extras", "dependencies", "sdist", "wheels",
             "build", "test", "unsupported", "accept-differs", "rebuild", "rebuild-reason"]


def parse(path: Path, text: str, problems: list[Problem], root: Path | None = None) -> Declaration | None:
    """Parse one declaration's text; append problems; return the declaration if it has none."""
    before = len(problems)
    doc, problem = guarded_loads(path, text)
    if doc is None:
        problems.append(problem)  # type: ignore[arg-type]
        return None
    r = _Reader(path, text, problems)
    for fpath, value in iter_strings(doc):
        if bad := control_problem(value):
            r.problem(fpath, bad)
    r.check_keys(doc, TOP_LEVEL, ())
    schema = r.get(doc, "schema", int, ())
    if schema is not None and schema != SCHEMA:
        r.problem(("schema",), f"unsupported schema {schema} (this tool reads schema {SCHEMA})")
    name = r.get(doc, "name", str, ())
    version = r.get(doc, "version", str, ())
    if version is not None:
        try:
            Version(version)
        except InvalidVersion:
            r.problem(("version",), f"not a PEP 440 version: {version!r}")
    if name is not None and not name.isascii():
        r.problem(("name",), f"has non-ASCII characters: {name!r}")
        name = None
    elif name is not None and not _PROJECT_NAME.match(name):
        r.problem(("name",), f"not a valid project name (PEP 508): {name!r}")
        name = None
    if name is not None:
        canonical = canonicalize_name(name)
        if path.stem != canonical:
            r.problem(("name",), f"file should be named {canonical}.toml for project {name!r}")
        if path.parent.name != shard_of(name):
            r.problem(("name",), f"file should be in the shard directory {shard_of(name)!r}")
        if root is not None and path.parent.parent.resolve() != root.resolve():
            r.problem(("name",), f"file should be at {path_for(name, root)}")
    rp = r.get(doc, "requires-python", str, (), required=False)
    if rp is not None:
        try:
            SpecifierSet(rp)
        except InvalidSpecifier:
            r.problem(("requires-python",), f"not a PEP 440 specifier set: {rp!r}")
    extras = r.str_list(doc, "extras", ())
    for i, extra in enumerate(extras):
        if not is_normalized_name(extra):
            hint = f" (write {canonicalize_name(extra)!r})" if re.fullmatch(r"[A-Za-z0-9._-]+", extra) else ""
            r.problem(("extras", i), f"not a PEP 685 normalised extra name: {extra!r}{hint}")
        elif extras.index(extra) != i:
            r.problem(("extras", i), f"extra {extra!r} listed twice")
    deps = _requirements(r, doc, "dependencies", (), required=False)
    owner = {"project": name, "version": version}
    sdist = _artifact(r, r.table(doc, "sdist", ()), ("sdist",), "sdist", **owner)
    located = _artifacts(r, doc, "wheels", (), "wheel", required=True, **owner)
    _unique(r, located)
    wheels = [a for _, a in located]
    if "wheels" in doc and not doc["wheels"]:
        r.problem(("wheels",), "at least one upstream wheel is required")
    build = _build(r, r.table(doc, "build", ()))
    test = _test(r, r.table(doc, "test", (), required=False)) if "test" in doc else None
    unsupported = _reasoned(r, doc, "unsupported", ())
    accept_differs = r.get(doc, "accept-differs", str, (), required=False)
    no_rebuild = _no_rebuild(r, doc)
    if len(problems) > before or None in (name, version, sdist, build):
        return None
    assert name is not None and version is not None and sdist is not None and build is not None
    return Declaration(path, name, version, rp, tuple(extras), tuple(deps), sdist, tuple(wheels), build, test,
                       unsupported, accept_differs, doc, no_rebuild)


def _no_rebuild(r: _Reader, doc: dict[str, Any]) -> str | None:
    """``rebuild = false`` needs ``rebuild-reason`` (a reviewed, non-empty reason); nothing else may say it."""
    rebuild = r.get(doc, "rebuild", bool, (), required=False, default=True)
    reason = r.get(doc, "rebuild-reason", str, (), required=False)
    if rebuild is False:
        if reason is None or not reason.strip():
            r.problem(("rebuild",), "rebuild = false needs a non-empty rebuild-reason (why upstream's bytes are "
                                    "published without a rebuild)")
            return None
        return reason.strip()
    if reason is not None:
        r.problem(("rebuild-reason",), "only meaningful with rebuild = false")
    return None


def _config_settings(r: _Reader, t: dict[str, Any], fp: FieldPath) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """PEP 517 ``config_settings``: string keys, each a string or a list of strings."""
    out: list[tuple[str, str | tuple[str, ...]]] = []
    for key, value in r.table(t, "config-settings", fp, required=False).items():
        p = fp + ("config-settings", key)
        if isinstance(value, str):
            out.append((key, value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out.append((key, tuple(value)))
        else:
            r.problem(p, f"expected a string or a list of strings (PEP 517 config_settings), got {value!r}")
    return tuple(sorted(out))


def load(path: Path, root: Path | None = None) -> Declaration:
    problems: list[Problem] = []
    decl = read_one(path, problems, root)
    if problems or decl is None:
        raise DeclarationError(problems)
    return decl


def iter_paths(root: Path = DECLARATIONS_DIR) -> Iterator[Path]:
    return iter(sorted(root.glob("*/*.toml")))


def read_one(path: Path, problems: list[Problem], root: Path | None = None) -> Declaration | None:
    """Read and parse one declaration file; append its problems."""
    text, problem = read_bounded(path)
    if text is None:
        problems.append(problem)  # type: ignore[arg-type]
        return None
    return parse(path, text, problems, root)


Reader = Callable[[Path, list[Problem], Path], Declaration | None]


def load_all(root: Path = DECLARATIONS_DIR, read: Reader = read_one) -> dict[str, Declaration]:
    """Every declaration under ``root`` keyed by canonical name; all problems raised together.

    ``read`` parses one file (an evaluation cache passes one that reuses unchanged files).
    """
    problems: list[Problem] = []
    out: dict[str, Declaration] = {}
    for stray in sorted(p for p in root.glob("*.toml") if p.name not in NON_DECLARATIONS):
        problems.append(Problem(stray, None, "", "declarations belong in a shard directory <xx>/<name>.toml"))
    for path in iter_paths(root):
        decl = read(path, problems, root)
        if decl is not None:
            if decl.canonical_name in out:
                other = out[decl.canonical_name].path
                problems.append(Problem(path, None, "name", f"project also declared in {other}"))
            out[decl.canonical_name] = decl
    if problems:
        raise DeclarationError(problems)
    return out


def parse_toolchain(path: Path) -> tuple[Artifact, ...]:
    """``builders/toolchain.toml``: ``[[tools]]`` wheels, held to the declarations' artifact rules."""
    problems: list[Problem] = []
    text, problem = read_bounded(path)
    if text is None:
        raise DeclarationError([problem])  # type: ignore[list-item]
    doc, problem = guarded_loads(path, text)
    if doc is None:
        raise DeclarationError([problem])  # type: ignore[list-item]
    r = _Reader(path, text, problems)
    for fpath, value in iter_strings(doc):
        if bad := control_problem(value):
            r.problem(fpath, bad)
    r.check_keys(doc, ["tools"], ())
    located = _artifacts(r, doc, "tools", (), "wheel", required=True)
    _unique(r, located)
    if problems:
        raise DeclarationError(problems)
    return tuple(a for _, a in located)
