"""``doit check``: the consistency rules of a curated, singly-versioned repository.

Each rule has a stable name used in reports. The pure core, :func:`run_rules`, takes declarations,
supported environments and a way to get each wheel's facts; the I/O (fetching wheels, caching their
facts) is at the edge in :func:`check_set`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cache, lru_cache

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from pipeline.model.declaration import Artifact, Declaration
from pipeline.model.environments import Environment, admits, left_out
from pipeline.model.extras import Member, member_of, requirement_satisfied, unmet
from pipeline.model.requirements import parse_requirement, satisfied_by
from pipeline.wheel.facts import WheelFacts

RULES = {
    "single-version": "one version per project",
    "platform-unique": "no two wheels of one project installable on the same supported environment",
    "coverage": "a wheel installable on every supported environment requires-python admits",
    "names": "declaration name and version equal the wheels' filenames and METADATA",
    "metadata": "requires-python and dependencies equal the wheel's METADATA",
    "closure": "every base requirement satisfied by the set in every environment; requested extras offered",
    "test-closure": "test requirements are in the set",
    "wheel-integrity": "valid archive, RECORD, paths, sizes, WHEEL and METADATA",
    "extras": "every offered extra is provided by the wheel and its requirements satisfied in every environment",
}


@dataclass(frozen=True)
class Failure:
    declaration: str
    rule: str
    project: str
    environment: str | None
    requirement: str | None
    message: str
    line: int | None = None     # where in the declaration, when one field is at fault
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.declaration}:{self.line}" if self.line else self.declaration
        env = f" [{self.environment}]" if self.environment else ""
        at = f" {self.field}:" if self.field else ""
        req = f" (requirement: {self.requirement})" if self.requirement else ""
        return f"{where}: {self.rule}: {self.project}{env}:{at} {self.message}{req}"


def _order(f: Failure) -> tuple[str, ...]:
    return (f.declaration, f.rule, f.environment or "", f.requirement or "", f.message)


FactsFor = Callable[[Declaration, Artifact], WheelFacts | None]


@cache
def _req(text: str) -> Requirement:
    return Requirement(text)


@cache
def _spec(text: str) -> SpecifierSet:
    return SpecifierSet(text)


@cache
def _version(text: str) -> Version:
    return Version(text)


@lru_cache(maxsize=1 << 16)
def _marker_true(marker: str, env_index: int, extra: str) -> bool:
    return Marker(marker).evaluate({**_ENVS[env_index].markers, "extra": extra})


_ENVS: list[Environment] = []


def _tag_part(filename: str) -> str:
    """``py3-none-any`` of ``name-1.0-py3-none-any.whl``: all that decides where a wheel installs."""
    return "-".join(filename.removesuffix(".whl").rsplit("-", 3)[1:])


@lru_cache(maxsize=1 << 12)
def _installable_on(tags: str) -> frozenset[int]:
    """Indices of the supported environments (of this run) a wheel with these tags installs on."""
    tag_set = parse_tag(tags)
    return frozenset(i for i, env in enumerate(_ENVS) if tag_set & env.tag_set)


def _admits(decl: Declaration, env: Environment) -> bool:
    return admits(decl.requires_python, env)


def _left_out(decl: Declaration, env: Environment) -> str | None:
    return left_out(decl.unsupported, env)


def _norm_reqs(values: Iterable[str]) -> set[str]:
    return {str(_req(v)) for v in values}


def run_rules(decls: dict[str, Declaration], envs: Iterable[Environment], facts_for: FactsFor) -> list[Failure]:
    envs = list(envs)
    _ENVS[:] = envs
    _marker_true.cache_clear()
    _installable_on.cache_clear()
    failures: list[Failure] = []

    def fail(d: Declaration, rule: str, message: str, env: Environment | None = None, req: str | None = None):
        failures.append(Failure(str(d.path), rule, d.canonical_name, env.name if env else None, req, message))

    by_name: dict[str, Declaration] = {canonicalize_name(k): d for k, d in decls.items()}
    for d in decls.values():
        # single-version and names: every wheel is of the declared project and version
        for w in d.wheels:
            name, version, _, _ = parse_wheel_filename(w.filename)
            if name != d.canonical_name:
                fail(d, "names", f"wheel {w.filename} is of project {name}")
            if version != _version(d.version):
                fail(d, "single-version", f"wheel {w.filename} is version {version}, declared {d.version}")
        # platform-unique and coverage (which environments a wheel installs on depends only on its tags)
        installs_on = [_installable_on(_tag_part(w.filename)) for w in d.wheels]
        for i, env in enumerate(envs):
            installable = [w for w, on in zip(d.wheels, installs_on, strict=True) if i in on]
            if len(installable) > 1:
                fail(d, "platform-unique", "wheels installable together: " +
                     ", ".join(w.filename for w in installable), env)
            if not installable and _admits(d, env) and _left_out(d, env) is None:
                fail(d, "coverage", "no wheel installable here (declare it in [[unsupported]] with a reason)", env)
        # names, metadata and wheel-integrity, from each wheel's own files
        for w in d.wheels:
            facts = facts_for(d, w)
            if facts is None:
                continue
            for problem in facts.problems:
                fail(d, "wheel-integrity", f"{w.filename}: {problem}")
            if facts.name is not None and canonicalize_name(facts.name) != d.canonical_name:
                fail(d, "names", f"{w.filename}: METADATA Name is {facts.name!r}")
            if facts.version is not None and _version(facts.version) != _version(d.version):
                fail(d, "names", f"{w.filename}: METADATA Version is {facts.version}")
            if facts.metadata is None:
                continue
            if (facts.requires_python or None) != (d.requires_python or None) and not (
                    facts.requires_python and d.requires_python
                    and _spec(facts.requires_python) == _spec(d.requires_python)):
                fail(d, "metadata", f"{w.filename}: Requires-Python is {facts.requires_python!r}, "
                                    f"declared {d.requires_python!r}")
            declared, actual = _norm_reqs(d.dependencies), _norm_reqs(facts.requires_dist)
            for r in sorted(actual - declared):
                fail(d, "metadata", f"{w.filename}: Requires-Dist not declared", req=r)
            for r in sorted(declared - actual):
                fail(d, "metadata", f"{w.filename}: declared dependency not in METADATA", req=r)
            provided = {canonicalize_name(e) for e in facts.provides_extra}
            for i, e in enumerate(d.extras):
                if canonicalize_name(e) not in provided:
                    failures.append(Failure(
                        str(d.path), "extras", d.canonical_name, None, None,
                        f"{e!r} is not a Provides-Extra of {w.filename} (it provides: "
                        f"{', '.join(sorted(provided)) or 'none'})", d.line_of("extras", i), f"extras[{i}]"))
        # test-closure
        if d.test:
            for text in d.test.requires:
                test_req = _req(text)
                target = by_name.get(canonicalize_name(test_req.name))
                if target is None:
                    fail(d, "test-closure", f"test requirement names {test_req.name}, which is not in the set",
                         req=text)
                elif not requirement_satisfied(text, target.version):
                    fail(d, "test-closure", f"the set has {target.name} {target.version}", req=text)
    members = {n: member_of(d, envs) for n, d in by_name.items()}  # where each is installed, once
    failures += _closure(by_name, members, envs)
    failures += _extras(by_name, members, envs)
    return sorted(set(failures), key=_order)


@dataclass(frozen=True)
class _Resolved:
    """One base requirement checked against the set, once for every environment."""

    text: str
    marker: str | None
    target: str                     # the canonical name it requires
    missing: str | None             # why the target is not in the set at all
    version: str | None             # why the set's version does not satisfy it
    extras: tuple[str, ...]         # the extras it asks for that the target does not offer


def _resolve(d: Declaration, by_name: Mapping[str, Declaration],
             extras_of: Mapping[str, Collection[str]]) -> list[_Resolved]:
    out = []
    for text in d.dependencies:
        r = parse_requirement(text)
        target = by_name.get(r.canonical)
        if target is None:
            out.append(_Resolved(text, r.marker, r.canonical, f"requires {r.name}, which is not in the set", None, ()))
            continue
        version = None if satisfied_by(r.specifier, target.version) else f"the set has {target.name} {target.version}"
        extras = tuple(f"{target.name} {target.version} does not offer extra {e!r}"
                       for e in r.extras if e not in extras_of[r.canonical])
        out.append(_Resolved(text, r.marker, r.canonical, None, version, extras))
    return out


def _closure(by_name: Mapping[str, Declaration], members: Mapping[str, Member],
             envs: list[Environment]) -> list[Failure]:
    """Per environment, each installed project's base requirements (what its extras add is the ``extras``
    rule's); an extra a requirement asks for must be one its project offers."""
    out: list[Failure] = []
    extras_of = {n: m.extras for n, m in members.items()}
    # What does not depend on the environment is worked out once per requirement, not once per environment.
    resolved = {n: _resolve(d, by_name, extras_of) for n, d in by_name.items()}
    paths = {n: str(d.path) for n, d in by_name.items()}
    for i, env in enumerate(envs):
        installed = {n for n, m in members.items() if env.name not in m.unavailable}
        for name in sorted(installed):

            def fail(req: _Resolved, message: str, name: str = name, where: str = env.name) -> None:
                out.append(Failure(paths[name], "closure", name, where, req.text, message))

            for req in resolved[name]:
                if req.marker is not None and not _marker_true(req.marker, i, ""):
                    continue
                if req.missing:
                    fail(req, req.missing)
                    continue
                if req.version:
                    fail(req, req.version)
                if req.target not in installed:
                    fail(req, f"{by_name[req.target].name} is not available here "
                              f"({members[req.target].unavailable[env.name]})")
                    continue
                for message in req.extras:
                    fail(req, message)
    return out


def _extras(by_name: Mapping[str, Declaration], members: Mapping[str, Member],
            envs: list[Environment]) -> list[Failure]:
    """Every offered extra's requirements (recursively through requested extras), in every environment
    where the project is installed; one failure per requirement and reason, listing its environments."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for name, member in members.items():
        for extra in sorted(member.extras):
            for env in envs:
                if env.name in member.unavailable:
                    continue
                for u in unmet(members, name, extra, env):
                    grouped.setdefault((name, u.extra, u.requirement, u.message), []).append(env.name)
    out = []
    for (name, _extra, requirement, message), where in grouped.items():
        out.append(Failure(str(by_name[name].path), "extras", name, _environments(where, envs), requirement,
                           message))
    return out


def _environments(names: list[str], envs: list[Environment]) -> str:
    """A list of environment names, shortened: ``all 20 environments``, or ``cp311-*`` for a Python
    version on every platform (the glob ``[[unsupported]]`` targets use)."""
    if len(set(names)) == len(envs):
        return f"all {len(envs)} environments"
    chosen = set(names)
    out: list[str] = []
    for env in envs:
        python = env.name.split("-", 1)[0]
        same = [e.name for e in envs if e.name.split("-", 1)[0] == python]
        if set(same) <= chosen:
            if f"{python}-*" not in out:
                out.append(f"{python}-*")
        elif env.name in chosen:
            out.append(env.name)
    return ", ".join(out)


def report(failures: list[Failure], n_decls: int, n_envs: int, as_json: bool) -> str:
    if as_json:
        return json.dumps({"ok": not failures, "declarations": n_decls, "environments": n_envs,
                           "rules": RULES, "failures": [asdict(f) for f in failures]}, indent=1)
    lines = [str(f) for f in failures]
    by_rule: dict[str, int] = {}
    for f in failures:
        by_rule[f.rule] = by_rule.get(f.rule, 0) + 1
    if failures:
        lines.append(f"check: {len(failures)} failures (" +
                     ", ".join(f"{r} {n}" for r, n in sorted(by_rule.items())) +
                     f") in {n_decls} declarations over {n_envs} environments")
    else:
        lines.append(f"check: ok: {n_decls} declarations, {len(RULES)} rules, {n_envs} environments")
    return "\n".join(lines)
