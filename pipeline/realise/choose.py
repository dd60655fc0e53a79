"""Which release of a project to declare, and which of its wheels.

Wheels: only those that serve a supported environment (PEP 425 tags, as ``packaging.tags`` orders
them for each environment in ``declarations/environments.toml``), and at most one per environment,
so the ``platform-unique`` rule holds: a greedy cover takes the wheel serving the most environments
still uncovered (a pure ``py3-none-any`` wheel serves them all; a ``cp311-abi3`` one every CPython
≥ 3.11 of its platform), never one installable where an earlier choice already is.

Release: the newest release that has an sdist, whose
wheels cover every environment its ``Requires-Python`` admits, and that has a wheel this build
machine can install (the one a rebuild is compared with). When none of the newest few does, the
newest that has an sdist and a wheel serving some environment is taken, and what it lacks is said
in one line (the environments it leaves out become ``[[unsupported]]`` entries with that reason).
Pre- and dev-releases are taken as PEP 440 (and ``packaging``'s ``SpecifierSet.filter``) say an
installer takes them: only when what the set's dependents require names one explicitly (e.g.
opentelemetry-sdk's ``opentelemetry-semantic-conventions==0.66b2``), or when no final release fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, sys_tags
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pipeline.model.environments import Environment, admits
from pipeline.model.errors import IndexError_
from pipeline.realise.index import IndexFile, SimpleIndex

__all__ = ["Candidate", "Release", "candidates", "choose_release", "select_wheels", "serves"]

# How many of the newest final releases are looked at for one that covers every environment.
LOOKBACK = 5


def serves(filename: str, envs: Sequence[Environment]) -> frozenset[str]:
    """The names of the environments a wheel can be installed in (PEP 425 tag sets intersect)."""
    tags = parse_wheel_filename(filename)[3]
    return frozenset(e.name for e in envs if tags & e.tag_set)


def _preference(filename: str, envs: Sequence[Environment]) -> int:
    """Sum over environments of the rank of the wheel's best tag (lower: preferred by installers)."""
    tags = parse_wheel_filename(filename)[3]
    total = 0
    for e in envs:
        rank = _rank(e)
        total += min((rank[t] for t in tags if t in rank), default=0)
    return total


@cache
def _rank(env: Environment) -> dict[Tag, int]:
    return {t: i for i, t in enumerate(env.tags)}


@dataclass(frozen=True)
class Release:
    """One release as the index lists it, with the wheels chosen for the supported environments."""

    version: str
    requires_python: str | None
    sdist: IndexFile
    wheels: tuple[IndexFile, ...]          # chosen: one per environment at most
    uncovered: tuple[str, ...]             # admitted environments no chosen wheel serves
    ignored: int                           # wheels that serve no supported environment
    buildable: bool                        # some chosen wheel installs on this build machine


def select_wheels(wheels: Sequence[IndexFile], envs: Sequence[Environment],
                  requires_python: str | None) -> tuple[list[IndexFile], list[str], int]:
    """(chosen wheels, admitted environments left uncovered, number of wheels serving none)."""
    admitted = [e for e in envs if admits(requires_python, e)]
    served = {w.filename: serves(w.filename, admitted) for w in wheels}
    useful = [w for w in wheels if served[w.filename]]
    useful.sort(key=lambda w: (-len(served[w.filename]), _preference(w.filename, admitted), w.filename))
    chosen: list[IndexFile] = []
    covered: set[str] = set()
    for w in useful:
        if served[w.filename] & covered:
            continue  # installable where an earlier choice is: two wheels on one platform
        chosen.append(w)
        covered |= served[w.filename]
    uncovered = [e.name for e in admitted if e.name not in covered]
    return sorted(chosen, key=lambda w: w.filename), uncovered, len(wheels) - len(useful)


def _build_tags() -> frozenset[Tag]:
    return frozenset(sys_tags())


@dataclass(frozen=True)
class Candidate:
    release: Release
    problems: tuple[str, ...]   # why it is not the ideal choice (empty: ideal)


def candidates(index: SimpleIndex, name: str, envs: Sequence[Environment]) -> list[Candidate]:
    """Releases (pre-releases too: ``choose_release`` filters them) with an sdist and at least one wheel
    serving a supported environment, newest first."""
    by_version: dict[Version, tuple[list[IndexFile], list[IndexFile]]] = {}
    for f in index.files(name):
        if f.yanked:
            continue
        try:
            v = parse_wheel_filename(f.filename)[1] if f.filename.endswith(".whl") else \
                parse_sdist_filename(f.filename)[1]
        except (ValueError, InvalidVersion):
            continue
        sd, wh = by_version.setdefault(v, ([], []))
        (wh if f.filename.endswith(".whl") else sd).append(f)
    build = _build_tags()
    out = []
    for v in sorted(by_version, reverse=True):
        sdists, wheels = by_version[v]
        if not sdists or not wheels:
            continue
        sdists.sort(key=lambda f: (not f.filename.endswith(".tar.gz"), f.filename))
        rp = next((w.requires_python for w in wheels if w.requires_python), None) or sdists[0].requires_python
        try:
            chosen, uncovered, ignored = select_wheels(wheels, envs, rp)
        except InvalidSpecifier:
            continue  # e.g. an old release's ">=3.5.*": not PEP 440, so no installer can honour it either
        if not chosen:
            continue
        buildable = any(parse_wheel_filename(w.filename)[3] & build for w in chosen)
        problems = []
        if uncovered:
            problems.append(f"no wheel for {_envs_text(uncovered)}")
        if not buildable:
            problems.append("no wheel this build machine can install to compare a rebuild with")
        out.append(Candidate(Release(str(v), rp, sdists[0], tuple(chosen), tuple(uncovered), ignored, buildable),
                             tuple(problems)))
    return out


def _envs_text(names: Sequence[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def choose_release(index: SimpleIndex, name: str, envs: Sequence[Environment],
                   skip: Sequence[str] = (), want: SpecifierSet | None = None) -> tuple[Release, list[str]]:
    """The release to declare and the one-line explanations of each release passed over.

    ``skip``: versions already tried and refused (e.g. their build inputs did not resolve).
    ``want``: what the set's dependents require of it (PEP 440), if anything.
    """
    every = [c for c in candidates(index, name, envs) if c.release.version not in skip]
    admitted = {str(v) for v in (want or SpecifierSet()).filter(Version(c.release.version) for c in every)}
    found = [c for c in every if c.release.version in admitted]
    if not found:
        tried = f" other than {', '.join(skip)}" if skip else ""
        within = f" within {want}" if want else ""
        raise IndexError_(f"{name} has no release{tried}{within} with an sdist and a wheel "
                          "for a supported environment")
    notes: list[str] = []
    for c in found[:LOOKBACK]:
        if not c.problems:
            return c.release, notes
        notes.append(f"{name} {c.release.version}: passed over: {'; '.join(c.problems)}")
    # None of the newest few is ideal: take the newest that can be compared, else the newest.
    best = next((c for c in found if c.release.buildable), found[0])
    notes = [f"{name}: none of the newest {min(LOOKBACK, len(found))} releases covers every environment; "
             f"declaring {best.release.version} ({'; '.join(best.problems)})"]
    return best.release, notes
