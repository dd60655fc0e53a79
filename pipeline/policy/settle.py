"""``declare NAME... --with-deps``: settle what the walk declared until ``check``'s rules hold (issue 13 item 1).

The walk (:func:`pipeline.realise.closure.declare_closure`) declares a closure; :func:`settle` then runs
:func:`pipeline.policy.check.run_rules` — the rules ``doit check`` runs, called, not copied — over the whole
set, in memory, and answers each failure on a project the walk touched:

- ``closure``, a dependency not installed in an environment (its ``[[unsupported]]``, e.g. no upstream wheel,
  or its ``Requires-Python``): the dependent gets an ``[[unsupported]]`` entry for that environment (or the
  whole platform, when no Python version of it has the dependency), its reason naming both, e.g.
  ``needs regex, which is not available on cp314-macos-x86_64 (no upstream wheel of regex … for this
  environment)``;
- ``closure``, a dependency that does not offer a requested extra (``markdown-it-py[linkify]``): the extra is
  enabled on the dependency when its wheel provides it (a ``not offered`` line ``declare`` wrote, never a
  reviewer's ``withheld``) and what it adds is met wherever the dependency is installed
  (:func:`pipeline.model.extras.unmet`, what the ``extras`` rule calls);
- ``extras``, an offered extra of a project the walk declared whose requirements the set does not meet (a
  project it counted on was not declarable): withdrawn, as a ``not offered`` line with the reason;
- anything else (a requirement not in the set, a version the singly-versioned set does not satisfy, an extra
  not provided or withheld, no supported environment left, the wheel's metadata): a project the walk
  declared is not written and is listed as not declarable with the rule's message.

Repeated to a fixed point (each step only adds entries, enables an extra never withdrawn, withdraws one, or
removes a project). Every edited file is validated as a declaration before any file is touched; then the
edits are written (atomically) and the removed files unlinked, and the rules run once more over what is on
disk: :attr:`Settlement.failures` is what ``check`` still finds on what the walk touched (empty when settled).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomlkit
from packaging.utils import canonicalize_name

from pipeline.model.declaration import DECLARATIONS_DIR, Artifact, Declaration, Deselection, load_all, parse
from pipeline.model.environments import Environment, unavailable
from pipeline.model.errors import DeclarationError, Problem, WheelproofError
from pipeline.model.extras import ExtraChoice, member_of, summarise, unmet, written_choices
from pipeline.model.requirements import parse_requirement, satisfied_by
from pipeline.policy.check import FactsFor, Failure, run_rules
from pipeline.realise.closure import ClosureReport, declare_closure
from pipeline.realise.declare import extras_array, supported_environments
from pipeline.realise.fetch import fetch
from pipeline.realise.index import SimpleIndex
from pipeline.store.local import Store, atomic_write
from pipeline.wheel.facts import WheelFacts, facts_for

__all__ = ["MAX_ROUNDS", "Settlement", "declare_with_deps", "settle", "why_not"]

# Rounds of check's rules before settling gives up (each round changes something, so the set's size bounds it).
MAX_ROUNDS = 200


@dataclass
class Settlement:
    """What :func:`settle` changed, and what ``check`` still finds on what the walk touched."""

    unsupported: dict[str, list[Deselection]] = field(default_factory=dict)   # name -> entries added
    enabled: dict[str, list[str]] = field(default_factory=dict)               # name -> extras now offered
    withdrawn: dict[str, dict[str, str]] = field(default_factory=dict)        # name -> extra -> why not
    removed: dict[str, str] = field(default_factory=dict)                     # name -> the rule's message
    failures: list[Failure] = field(default_factory=list)                     # after writing: empty = settled


def why_not(failures: Sequence[Failure]) -> str:
    """One line for a project that is not declarable: its first failure as ``check`` reports it (without
    the file, which is not written), and how many more there were."""
    f = failures[0]
    env = f" [{f.environment}]" if f.environment else ""
    req = f" (requirement: {f.requirement})" if f.requirement else ""
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{f.rule}: {f.project}{env}: {f.message}{req}{more}"


class _Set:
    """The set being settled, in memory: declarations, and the extras arrays of those whose extras change."""

    def __init__(self, root: Path, envs: Sequence[Environment], new: set[str], log: Callable[[str], None]):
        self.root, self.envs, self.new, self.log = root, list(envs), new, log
        self.decls = load_all(root)
        self.by_env = {e.name: e for e in self.envs}
        self.choices: dict[str, list[ExtraChoice]] = {}
        self.touched = set(new)
        self.out = Settlement()
        self.once_withdrawn: set[tuple[str, str]] = set()

    def choices_of(self, name: str) -> list[ExtraChoice]:
        if name not in self.choices:
            d = self.decls[name]
            source = tomlkit.parse(d.path.read_text(encoding="utf-8")).get("extras")
            text = source.as_string() if isinstance(source, tomlkit.items.Array) else ""
            self.choices[name] = written_choices(d, text)
        return self.choices[name]

    def unmet_extra(self, name: str, extra: str, decl: Declaration | None = None) -> str | None:
        """Why ``name[extra]`` is not met wherever ``name`` is installed (with ``decl`` standing in for it)."""
        members = {n: member_of(d, self.envs) for n, d in self.decls.items()}
        if decl is not None:
            members[name] = member_of(decl, self.envs)
        problems = [u for env in self.envs if env.name not in members[name].unavailable
                    for u in unmet(members, name, extra, env)]
        return summarise(problems) if problems else None

    def set_extras(self, name: str, offered: dict[str, str | None]) -> None:
        """Offer (None) or withdraw (the reason) extras of ``name``, in memory."""
        choices = [ExtraChoice(c.name, offered[c.name] is None, offered[c.name]) if c.name in offered else c
                   for c in self.choices_of(name)]
        self.choices[name] = choices
        self.decls[name] = replace(self.decls[name], extras=tuple(c.name for c in choices if c.offered))

    # -- one round -------------------------------------------------------------------------------

    def round(self, failures: list[Failure]) -> bool:
        """Answer this round's failures on touched projects; False when nothing could change."""
        mine: dict[str, list[Failure]] = {}
        for f in failures:
            if f.project in self.touched and f.project in self.decls:
                mine.setdefault(f.project, []).append(f)
        unfixable: dict[str, list[Failure]] = {}
        propagate: dict[str, dict[tuple[str, str], list[str]]] = {}
        enable: dict[str, dict[str, str]] = {}         # dependency -> extra -> the dependent asking
        withdraw: set[str] = set()
        for name, fs in mine.items():
            for f in fs:
                if f.rule == "closure" and f.requirement and f.environment:
                    kind = self._closure(name, f, propagate, enable)
                elif f.rule == "extras" and f.requirement:
                    withdraw.add(name)
                    continue
                else:
                    kind = f
                if kind is not None:
                    unfixable.setdefault(name, []).append(kind)
        changed = False
        for name, fs in sorted(unfixable.items()):
            if name in self.new:
                self.remove(name, why_not(fs))
                changed = True
        for name in sorted(withdraw - set(self.out.removed)):
            changed |= self._withdraw(name, mine[name])
        for dep, extras in sorted(enable.items()):
            for extra, dependent in sorted(extras.items()):
                if dependent not in self.out.removed and dep in self.decls:
                    changed |= self._enable(dep, extra, dependent)
        for name, groups in sorted(propagate.items()):
            if name not in self.out.removed:
                self._propagate(name, groups)
                changed = True
        return changed

    def _closure(self, name: str, f: Failure, propagate: dict[str, dict[tuple[str, str], list[str]]],
                 enable: dict[str, dict[str, str]]) -> Failure | None:
        """Classify one closure failure: None when it is answered (by an entry or an extra), else itself."""
        r = parse_requirement(f.requirement or "")
        dep = self.decls.get(r.canonical)
        if dep is None or not satisfied_by(r.specifier, dep.version):
            return f
        env = self.by_env[f.environment or ""]
        if (why := unavailable(dep, env)) is not None:
            propagate.setdefault(name, {}).setdefault((dep.name, why), []).append(env.name)
            return None
        offered = {canonicalize_name(e) for e in dep.extras}
        missing = [x for x in r.extras if x not in offered]
        if not missing:
            return f
        provided = {c.name: c for c in self.choices_of(dep.canonical_name)}
        for x in missing:
            c = provided.get(x)
            if c is None:
                return replace(f, message=f"{f.message}, and its wheel does not provide it")
            if c.reviewed:
                return replace(f, message=f"{f.message} (withheld by a reviewer: {c.reason})")
            if (dep.canonical_name, x) in self.once_withdrawn:
                return replace(f, message=f"{f.message} ({c.reason})")
            if (why := self.unmet_extra(dep.canonical_name, x, replace(dep, extras=(*dep.extras, x)))) is not None:
                return replace(f, message=f"{f.message}, and offering it is not possible: {why}")
            enable.setdefault(dep.canonical_name, {}).setdefault(x, name)
        return None

    def remove(self, name: str, why: str) -> None:
        del self.decls[name]
        self.out.removed[name] = why
        self.log(f"{name}: not declarable: {why}")

    def _withdraw(self, name: str, fs: list[Failure]) -> bool:
        """Withdraw the offered extras of ``name`` that are not met (those the walk declared, or enabled)."""
        ours = {c.name for c in self.choices_of(name)} if name in self.new else set(self.out.enabled.get(name, ()))
        reasons = {e: why for e in sorted(ours & {canonicalize_name(x) for x in self.decls[name].extras})
                   if (why := self.unmet_extra(name, e)) is not None}
        if not reasons:
            if name in self.new:
                self.remove(name, why_not(fs))
                return True
            return False
        self.set_extras(name, dict(reasons))
        d = self.decls[name]
        for e, why in reasons.items():
            self.once_withdrawn.add((name, e))
            if e in self.out.enabled.get(name, []):
                self.out.enabled[name].remove(e)
            self.out.withdrawn.setdefault(name, {})[e] = why
            self.log(f"{name} {d.version}: extra {e!r} no longer offered: {why}")
        return True

    def _enable(self, dep: str, extra: str, dependent: str) -> bool:
        if extra in {canonicalize_name(e) for e in self.decls[dep].extras}:
            return False
        self.set_extras(dep, {extra: None})
        self.touched.add(dep)
        self.out.enabled.setdefault(dep, []).append(extra)
        self.out.withdrawn.get(dep, {}).pop(extra, None)
        d = self.decls[dep]
        self.log(f"{dep} {d.version}: extra {extra!r} now offered: {dependent} requires it and the set meets it")
        return True

    def _propagate(self, name: str, groups: dict[tuple[str, str], list[str]]) -> None:
        """``[[unsupported]]`` entries for ``name`` where a dependency is not installed: one per platform when
        the dependency is missing on all of it, else one per environment."""
        d = self.decls[name]
        added: list[Deselection] = []
        order = {e.name: i for i, e in enumerate(self.envs)}
        for (dep, why), where in sorted(groups.items(), key=lambda g: min(order[n] for n in g[1])):
            why = why.split(" (", 1)[0] if why.startswith("needs ") else why   # one level of "needs …", not a chain
            chosen = set(where)
            targets: list[str] = []
            for env in self.envs:
                platform = [e.name for e in self.envs if e.platform == env.platform]
                if set(platform) <= chosen:
                    if env.platform not in targets:
                        targets.append(env.platform)
                elif env.name in chosen:
                    targets.append(env.name)
            for target in targets:
                added.append(Deselection(target, f"needs {dep}, which is not available on {target} ({why})"))
        self.decls[name] = replace(d, unsupported=(*d.unsupported, *added))
        self.out.unsupported.setdefault(name, []).extend(added)
        for u in added:
            self.log(f"{name} {d.version}: [[unsupported]] {u.target}: {u.reason}")
        if name in self.new and all(unavailable(self.decls[name], e) is not None for e in self.envs):
            self.remove(name, f"installable in no supported environment (e.g. {added[0].target}: {added[0].reason})")

    # -- writing ------------------------------------------------------------------------------------

    def texts(self) -> dict[Path, str]:
        """The edited text of every declaration that changed and stays, each validated as a declaration."""
        out: dict[Path, str] = {}
        for name in sorted(set(self.out.unsupported) | set(self.choices)):
            if name not in self.decls:
                continue
            d = self.decls[name]
            doc = tomlkit.parse(d.path.read_text(encoding="utf-8"))
            if name in self.out.enabled or name in self.out.withdrawn:
                doc["extras"] = extras_array(self.choices[name])
            if self.out.unsupported.get(name):
                aot = doc.get("unsupported")
                if not isinstance(aot, tomlkit.items.AoT):
                    aot = tomlkit.aot()
                for u in self.out.unsupported[name]:
                    t = tomlkit.table()
                    t["target"] = u.target
                    t["reason"] = u.reason
                    aot.append(t)
                doc["unsupported"] = aot
            text = tomlkit.dumps(doc)
            problems: list[Problem] = []
            if parse(d.path, text, problems, self.root) is None or problems:
                raise DeclarationError(problems or [Problem(d.path, None, "", "the settled text does not load")])
            out[d.path] = text
        return out


def settle(root: Path, new: Collection[str], *, envs: Sequence[Environment], facts: FactsFor,
           log: Callable[[str], None] = print) -> Settlement:
    """Settle the declarations ``new`` (written by the walk) under ``root`` until ``check``'s rules hold
    on them; ``facts`` gives the wheel facts of their wheels (see the module docstring)."""
    state = _Set(root, envs, {str(canonicalize_name(n)) for n in new}, log)
    state.new &= set(state.decls)
    state.touched &= set(state.decls)
    removed_paths = {n: state.decls[n].path for n in state.new}

    def facts_of_new(d: Declaration, w: Artifact) -> WheelFacts | None:
        return facts(d, w) if d.canonical_name in state.new else None

    for _round in range(MAX_ROUNDS):
        if not state.round(run_rules(state.decls, envs, facts_of_new)):
            break
    else:
        raise WheelproofError(f"declare --with-deps: the set did not settle in {MAX_ROUNDS} rounds")
    texts = state.texts()          # every edit validated before any file is touched
    for path, text in texts.items():
        atomic_write(path, text.encode())
    for name in state.out.removed:
        removed_paths[name].unlink(missing_ok=True)
    touched = state.touched - set(state.out.removed)
    state.out.failures = [f for f in run_rules(load_all(root), envs, facts_of_new) if f.project in touched]
    return state.out


def declare_with_deps(names: Sequence[str], *, index: SimpleIndex, store: Store | None = None,
                      root: Path = DECLARATIONS_DIR, with_test_deps: bool = False,
                      log: Callable[[str], None] = print) -> ClosureReport:
    """``declare NAME... --with-deps``: the walk, then :func:`settle`; the report lists what was declared,
    the ``[[unsupported]]`` entries and extras settling changed, what is not declarable (with the rule's
    message) and what ``check``'s rules still find on what the walk touched (empty when settled)."""
    store = store or Store()
    before = set(load_all(root))
    report = declare_closure(names, index=index, store=store, root=root, with_test_deps=with_test_deps, log=log)

    def facts(decl: Declaration, wheel: Artifact) -> WheelFacts:
        fetch(store, wheel, what=f"{decl.path} (wheels)", log=log)   # declare fetched them: a verified no-op
        return facts_for(store, wheel.sha256, wheel.filename)

    done = settle(root, set(report.declared) - before, envs=supported_environments(root), facts=facts, log=log)
    for name, why in done.removed.items():
        report.declared.pop(name, None)
        report.failed[name] = why
    report.unsupported = {n: [f"{u.target}: {u.reason}" for u in us] for n, us in done.unsupported.items()
                          if n not in done.removed}
    report.extras = {n: [f"+{e}" for e in done.enabled.get(n, [])] + [f"-{e}: {why}" for e, why in
                                                                       done.withdrawn.get(n, {}).items()]
                     for n in sorted(set(done.enabled) | set(done.withdrawn)) if n not in done.removed}
    report.extras = {n: v for n, v in report.extras.items() if v}
    report.check = [str(f) for f in done.failures]
    return report
