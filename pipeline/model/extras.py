"""Extras the set offers: which requirements an extra adds, and whether the set satisfies them.

A declaration's ``extras`` lists the extras the repository *offers* (IPWHL's "all dependencies
satisfied" rule covers them): ``pip install "project[extra]"`` against a snapshot must resolve in
every supported environment. The requirements behind an extra are the ``Requires-Dist`` entries
(PEP 508) whose marker holds with ``extra`` set to it and does not hold without it, evaluated per
environment by ``packaging.markers`` (which compares ``extra`` names after PEP 685 normalisation).
Extras requested by those requirements (``pkg[a]``) are followed recursively.

Used by ``check``'s ``extras`` rule (pipeline/policy/check.py) and by ``declare``, which proposes the
extras whose closure is in the set (:func:`propose`) and, on regeneration, keeps the reviewed choice
(:func:`keep_choice`, :func:`previous_choice`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from packaging.markers import Marker
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, is_normalized_name

from pipeline.model.declaration import Declaration
from pipeline.model.environments import Environment, admits, unavailable
from pipeline.model.requirements import Req, parse_requirement, satisfied_by

__all__ = ["ExtraChoice", "Member", "PreviousChoice", "Unmet", "added_by", "choice_comment", "is_valid_extra",
           "keep_choice", "member_of", "previous_choice", "propose", "requirement_satisfied", "satisfied", "summarise",
           "unmet", "written_choices"]

NOT_OFFERED = "not offered"   # an automatic choice: re-evaluated every time `declare` runs
WITHHELD = "withheld"         # a reviewer's choice: kept as written
_COMMENT = re.compile(r'^\s*#\s*"(?P<name>[^"]*)"\s*:\s*(?P<kind>not offered|withheld)\s*:\s*(?P<reason>.*?)\s*$')


def is_valid_extra(name: str) -> bool:
    """A PEP 685 normalised extra name (lower case, runs of ``-_.`` as one ``-``; core metadata 2.3)."""
    return is_normalized_name(name)


def _extra_marker(req: Req) -> str | None:
    """The marker's text if it can depend on ``extra``."""
    return req.marker if req.marker is not None and "extra" in req.marker else None


@lru_cache(maxsize=1 << 16)
def _holds(marker: str, env: Environment, extra: str) -> bool:
    return Marker(marker).evaluate({**env.markers, "extra": extra})


def satisfied(specifier: SpecifierSet | str, version: str) -> bool:
    """PEP 440 as an installer applies it: pre-releases match only when nothing else does."""
    return satisfied_by(str(specifier), version)


def requirement_satisfied(requirement: str, version: str) -> bool:
    """Whether ``version`` satisfies the specifier of the PEP 508 ``requirement`` (see :func:`satisfied`)."""
    return satisfied_by(parse_requirement(requirement).specifier, version)


def added_by(dependencies: Iterable[str], extra: str, env: Environment) -> list[tuple[str, Req]]:
    """The requirements that ``[extra]`` adds to the base install in ``env``: marker true with ``extra``
    set to it, false without (so ``python_version < "3.11" or extra == "x"`` counts only where the base
    does not already need it)."""
    out = []
    for text in dependencies:
        r = parse_requirement(text)
        marker = _extra_marker(r)
        if marker is not None and _holds(marker, env, extra) and not _holds(marker, env, ""):
            out.append((text, r))
    return out


@dataclass(frozen=True)
class Member:
    """A project as the extras logic sees it: a declaration of the set, or one about to be declared
    (``version`` None: not known yet, so only its presence counts)."""

    name: str                                   # PEP 503 canonical
    version: str | None
    extras: frozenset[str]                      # the extras it offers (PEP 685 normalised)
    dependencies: tuple[str, ...]
    unavailable: Mapping[str, str] = field(default_factory=dict)  # environment name -> why not installed


def member_of(decl: Declaration, envs: Iterable[Environment]) -> Member:
    gaps = {env.name: why for env in envs if (why := unavailable(decl, env)) is not None}
    return Member(decl.canonical_name, decl.version, frozenset(canonicalize_name(e) for e in decl.extras),
                  decl.dependencies, gaps)


@dataclass(frozen=True)
class Unmet:
    """A requirement behind ``project[extra]`` that the set does not satisfy in one environment."""

    project: str
    extra: str
    requirement: str     # as written in the declaring project's dependencies
    target: str          # the project it names
    reason: str
    via: tuple[str, ...] = ()   # the extras it is reached through, e.g. ("pkg[a]",)
    missing: bool = False       # the target is not in the set at all

    @property
    def message(self) -> str:
        via = f" (via {' -> '.join(self.via)})" if self.via else ""
        return f"extra {self.extra!r}{via}: {self.reason}"


def unmet(members: Mapping[str, Member], project: str, extra: str, env: Environment) -> list[Unmet]:
    """What installing ``project[extra]`` in ``env`` needs from the set and does not get.

    The base requirements of every project reached are the ``closure`` rule's concern; here only what
    the extras add, following requested extras (``pkg[a]``) through the set to a fixed point.
    """
    out: list[Unmet] = []
    seen = {(project, extra)}
    stack: list[tuple[str, str, tuple[str, ...]]] = [(project, extra, ())]
    while stack:
        name, e, via = stack.pop()
        for text, r in added_by(members[name].dependencies, e, env):
            target_name = r.canonical
            target = members.get(target_name)

            def miss(reason: str, missing: bool = False, text: str = text, target_name: str = target_name,
                     via: tuple = via) -> None:
                out.append(Unmet(project, extra, text, target_name, reason, via, missing))

            if target is None:
                miss(f"requires {r.name}, which is not in the set", missing=True)
                continue
            if target.version is not None and not requirement_satisfied(text, target.version):
                miss(f"requires {r.name}{r.specifier}; the set has {target.version}")
            if env.name in target.unavailable:
                miss(f"requires {r.name}, which is not available here ({target.unavailable[env.name]})")
                continue
            if target.version is None:
                continue  # about to be declared: its own extras are proposed when it is
            for x in r.extras:
                if x not in target.extras:
                    miss(f"requires {r.name}[{x}], and {target_name} does not offer extra {x!r}")
                elif (target_name, x) not in seen:
                    seen.add((target_name, x))
                    stack.append((target_name, x, via + (f"{target_name}[{x}]",)))
    return out


# -- declare: propose the offered extras, keep a reviewed choice ---------------------------------


@dataclass(frozen=True)
class ExtraChoice:
    """Whether ``declare`` offers one ``Provides-Extra``; when not, why (written as a TOML comment)."""

    name: str
    offered: bool
    reason: str | None = None
    reviewed: bool = False       # withheld by a reviewer (kept as written), not by the closure
    note: str | None = None      # for the log: e.g. an offered extra kept although its closure is not met


def summarise(problems: Sequence[Unmet], limit: int = 5) -> str:
    """One line: the projects missing from the set, then the other reasons."""
    missing = sorted({u.target for u in problems if u.missing})
    others = list(dict.fromkeys(u.message.split(": ", 1)[1] for u in problems if not u.missing))
    parts = []
    if missing:
        more = f" and {len(missing) - limit} more" if len(missing) > limit else ""
        parts.append(f"requires {', '.join(missing[:limit])}{more}, not in the set")
    parts += others[:limit] + ([f"and {len(others) - limit} more"] if len(others) > limit else [])
    return "; ".join(parts)


def propose(name: str, version: str, provides: Iterable[str], dependencies: Sequence[str],
            requires_python: str | None, members: Mapping[str, Member], envs: Sequence[Environment],
            will_declare: Collection[str] = ()) -> list[ExtraChoice]:
    """Offer each extra whose closure is in the set, or will be once ``will_declare`` (names about to
    be declared, e.g. by ``declare --with-deps``) are; the others are not offered, with the reason.

    Extras of the project itself (``all = ["name[a]", "name[b]"]``) are resolved as a greatest fixed
    point: start from every extra and withdraw those with an unmet requirement until none changes.
    """
    own = canonicalize_name(name)
    pool = dict(members)
    for n in will_declare:
        if canonicalize_name(n) != own:
            pool.setdefault(canonicalize_name(n), Member(canonicalize_name(n), None, frozenset(), ()))
    candidates = sorted({canonicalize_name(e) for e in provides})
    offered = set(candidates)
    gaps = {env.name: f"requires-python {requires_python}" for env in envs if not admits(requires_python, env)}
    reasons: dict[str, str] = {}
    while True:
        pool[own] = Member(own, version, frozenset(offered), tuple(dependencies), gaps)
        withdrawn: dict[str, str] = {}
        for extra in sorted(offered):
            problems = [u for env in envs if env.name not in gaps for u in unmet(pool, own, extra, env)]
            if problems:
                withdrawn[extra] = summarise(problems)
        if not withdrawn:
            break
        offered -= withdrawn.keys()
        reasons.update(withdrawn)
    return [ExtraChoice(e, e in offered, reasons.get(e)) for e in candidates]


@dataclass(frozen=True)
class PreviousChoice:
    """What an existing declaration chose: the extras it offers and those a reviewer withheld."""

    offered: frozenset[str]
    withheld: Mapping[str, str] = field(default_factory=dict)   # name -> the reviewer's reason


def _recorded(extras_source: str) -> Iterator[tuple[str, str, str]]:
    """(name, kind, reason) of each ``# "NAME": not offered|withheld: REASON`` line of an ``extras`` array."""
    for line in extras_source.splitlines():
        if m := _COMMENT.match(line):
            yield canonicalize_name(m.group("name")), m.group("kind"), m.group("reason")


def previous_choice(decl: Declaration, extras_source: str) -> PreviousChoice:
    """Read the choice from a declaration and the source text of its ``extras`` array, whose
    comment lines ``# "NAME": withheld: REASON`` record a reviewer's decision (``# "NAME": not offered:
    …`` lines are ``declare``'s own, re-evaluated each time)."""
    withheld = {name: reason for name, kind, reason in _recorded(extras_source) if kind == WITHHELD}
    return PreviousChoice(frozenset(canonicalize_name(e) for e in decl.extras), withheld)


def written_choices(decl: Declaration, extras_source: str) -> list[ExtraChoice]:
    """Every extra a declaration's ``extras`` array records, in order: the offered names, then its comment
    lines (``# "NAME": not offered: REASON``, ``declare``'s own, and ``# "NAME": withheld: REASON``, a
    reviewer's), so an edit of the array (``declare --with-deps`` settling the set) can rewrite it whole."""
    out = [ExtraChoice(canonicalize_name(e), True) for e in decl.extras]
    seen = {c.name for c in out}
    for name, kind, reason in _recorded(extras_source):
        if name not in seen:
            seen.add(name)
            out.append(ExtraChoice(name, False, reason, reviewed=kind == WITHHELD))
    return out


def keep_choice(proposal: Sequence[ExtraChoice], previous: PreviousChoice | None) -> list[ExtraChoice]:
    """Apply a reviewed choice to a fresh proposal (what ``declare`` on an existing file and ``update``
    do): a withheld extra stays withheld; an offered one stays offered even if its closure is no longer
    in the set (``check`` then fails, naming the requirement, so a person decides); extras new in this
    version, and those ``declare`` had left out automatically, take the proposal."""
    if previous is None:
        return list(proposal)
    out = []
    for c in proposal:
        if c.name in previous.withheld:
            out.append(ExtraChoice(c.name, False, previous.withheld[c.name], reviewed=True))
        elif c.name in previous.offered and not c.offered:
            out.append(ExtraChoice(c.name, True, None, note=f"kept offered as before, but {c.reason}"))
        else:
            out.append(c)
    return out


def choice_comment(c: ExtraChoice) -> str:
    """The one-line TOML comment for an extra that is not offered (no line breaks survive)."""
    kind = WITHHELD if c.reviewed else NOT_OFFERED
    return " ".join(f'"{c.name}": {kind}: {c.reason or "no reason given"}'.split())
