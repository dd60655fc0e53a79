"""``python -m pipeline update [NAME...] [--min-age DAYS]``: move declarations to newer releases.

For each declaration (or those named), the release ``declare`` would choose today
(pipeline/realise/choose.py: newest final release with an sdist and wheels for the supported
environments), among those uploaded at least ``min_age`` days ago (PEP 700 ``upload-time`` of the
sdist; a release whose index entry gives no upload time is not taken while a cooldown is asked for), and
within what the set's other declarations require of the project. A newer one is re-declared by
``declare``, which edits the file with tomlkit: hand-written overrides (``build.extra-inputs``,
``build.environment``, ``build.limits``, ``build.config-settings``, ``[test]``, ``rebuild = false``,
``accept-differs``, reviewed ``[[unsupported]]``) and the reviewed extras choice (``keep_choice``) are
kept, stale keys and the header comment are rewritten. Then every ``check`` rule runs over the whole
set; if any fails, the previous file is put back byte for byte and the update is refused with the
failures. Each change is summarised in a few lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipeline.model import environments
from pipeline.model.declaration import DECLARATIONS_DIR, Declaration, load, load_all
from pipeline.model.errors import WheelproofError
from pipeline.policy.check import Failure, run_rules
from pipeline.realise.choose import candidates, choose_release
from pipeline.realise.fetch import fetch
from pipeline.realise.index import SimpleIndex
from pipeline.store.local import Store, atomic_write
from pipeline.wheel.facts import facts_for

__all__ = ["Change", "UpdateReport", "changes", "check_set", "dependents_want", "update"]


@dataclass(frozen=True)
class Change:
    name: str
    old: str
    new: str
    lines: tuple[str, ...]   # what changed besides the version


@dataclass
class UpdateReport:
    updated: list[Change] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def dependents_want(decls: Mapping[str, Declaration], name: str) -> SpecifierSet:
    """What the set's other declarations require of ``name`` (their specifiers, intersected)."""
    specs = [str(r.specifier) for d in decls.values() if d.canonical_name != name
             for r in map(Requirement, d.dependencies) if canonicalize_name(r.name) == name and r.specifier]
    return SpecifierSet(",".join(specs))


def changes(old: Declaration, new: Declaration) -> tuple[str, ...]:
    """A few lines: dependencies, extras, wheels and build inputs that changed."""
    out = []
    for label, a, b in (("dependencies", old.dependencies, new.dependencies), ("extras", old.extras, new.extras),
                        ("wheels", [w.filename for w in old.wheels], [w.filename for w in new.wheels]),
                        ("build inputs", [i.filename for i in old.build.inputs],
                         [i.filename for i in new.build.inputs])):
        added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
        if added or removed:
            out.append(f"{label}: " + "; ".join(x for x in (f"+ {', '.join(added)}" if added else "",
                                                             f"- {', '.join(removed)}" if removed else "") if x))
    if old.requires_python != new.requires_python:
        out.append(f"requires-python: {old.requires_python} -> {new.requires_python}")
    return tuple(out)


def check_set(root: Path, store: Store, log: Callable[[str], None]) -> list[Failure]:
    """Every ``check`` rule over the declarations under ``root`` (wheels fetched as needed, each download shown)."""
    env_file = root / "environments.toml"
    envs = environments.load(env_file if env_file.exists() else environments.ENVIRONMENTS_FILE)

    def facts(decl: Declaration, wheel):  # type: ignore[no-untyped-def]
        fetch(store, wheel, what=f"{decl.path} (wheels)", log=lambda m: log(f"check: {m}"))
        return facts_for(store, wheel.sha256, wheel.filename)

    return run_rules(load_all(root), envs, facts)


def _old_enough(upload_time: str | None, min_age: float, now: dt.datetime) -> bool:
    if min_age <= 0:
        return True
    if not upload_time:
        return False
    uploaded = dt.datetime.fromisoformat(upload_time.replace("Z", "+00:00"))
    return now - uploaded >= dt.timedelta(days=min_age)


def update(names: Sequence[str] = (), *, index: SimpleIndex, store: Store | None = None,
           root: Path = DECLARATIONS_DIR, min_age: float = 0, now: dt.datetime | None = None,
           log: Callable[[str], None] = print) -> UpdateReport:
    """Update the named declarations (all when none are named); see the module docstring."""
    from pipeline.realise.declare import declare, supported_environments

    store = store or Store()
    now = now or dt.datetime.now(dt.UTC)
    envs = supported_environments(root)
    decls = load_all(root)
    wanted: list[str] = [str(canonicalize_name(n)) for n in names] or sorted(decls)
    report = UpdateReport()
    for i, name in enumerate(wanted, 1):
        if name not in decls:
            report.refused[name] = f"no declaration named {name!r} under {root}"
            continue
        old = decls[name]
        log(f"[{i}/{len(wanted)}] {name} {old.version}: looking for a newer release")
        young = [c.release.version for c in candidates(index, name, envs)
                 if not _old_enough(c.release.sdist.upload_time, min_age, now)]
        try:
            release, notes = choose_release(index, name, envs, young, dependents_want(decls, name) or None)
        except WheelproofError as e:
            report.refused[name] = str(e)
            continue
        if Version(release.version) <= Version(old.version):
            report.current.append(name)
            continue
        for note in notes:
            log(note)
        if young:
            log(f"{name}: {', '.join(young)} uploaded less than {min_age:g} days ago, not taken")
        before = old.path.read_bytes()
        try:
            declare(f"{name}=={release.version}", index=index, store=store, root=root, log=log)
            failures = check_set(root, store, log)
        except WheelproofError as e:
            atomic_write(old.path, before)
            report.refused[name] = f"{release.version}: {str(e).splitlines()[0] if str(e) else e!r}"
            log(f"{name}: update to {release.version} refused; {old.path} left as it was")
            continue
        if failures:
            atomic_write(old.path, before)
            shown = "; ".join(str(f) for f in failures[:3])
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            report.refused[name] = f"{release.version}: check fails after the update: {shown}{more}"
            log(f"{name}: update to {release.version} refused (check fails); {old.path} left as it was")
            continue
        new = load(old.path, root)
        decls[name] = new
        report.updated.append(Change(name, old.version, new.version, changes(old, new)))
    return report
