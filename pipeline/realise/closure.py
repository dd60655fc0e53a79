"""``declare NAME... --with-deps``: declare a closure over every supported environment.

Breadth first from the names given: each project's base requirements (``Requires-Dist`` without an
``extra``, PEP 508 markers evaluated in each supported environment its ``Requires-Python`` admits,
``packaging.markers``), those the extras its dependents ask for add (``markdown-it-py[linkify]`` walks
``linkify-it-py``) and, with ``with_test_deps``, its ``[test] requires``, are declared in turn,
unless the set already has them. The release of each is chosen by
:func:`pipeline.realise.choose.choose_release` within what the set's dependents require of it; when
declaring a release fails (its build requirements do not resolve, its backend cannot be asked), the
next older one is tried, and each fallback is one line. What cannot be declared is listed with its
reason at the end; nothing is half-written (``declare`` writes a file only once it validates).

This module only walks and declares; :func:`pipeline.policy.settle.declare_with_deps` then runs
``check``'s rules over the result and settles it (``[[unsupported]]`` propagated, extras enabled or
withdrawn, what still fails removed), so what it leaves passes ``check``.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from pipeline.model.declaration import DECLARATIONS_DIR, Declaration, load, load_all, path_for
from pipeline.model.environments import Environment, admits
from pipeline.model.errors import WheelproofError
from pipeline.realise.choose import choose_release
from pipeline.realise.index import SimpleIndex
from pipeline.store.local import Store

__all__ = ["ATTEMPTS", "LEFT_OUT", "ClosureReport", "declare_closure", "left_out_reason", "requirements_of"]

# Releases tried per project before it is listed as not declarable.
ATTEMPTS = 3
# Projects never declared by a closure walk: their wheels (CUDA builds of torch, 0.5-3 GB each) would blow
# the storage budget of the set on their own. fnmatch patterns over PEP 503 names.
LEFT_OUT = {
    "torch": "torch: its CUDA wheels (and the nvidia-* wheels they pull) blow the storage budget",
    "torchvision": "requires torch (storage budget)",
    "torchaudio": "requires torch (storage budget)",
    "triton": "a CUDA compiler toolchain pulled by torch (storage budget)",
    "nvidia-*": "CUDA runtime wheels (storage budget)",
    "tensorflow*": "TensorFlow wheels (storage budget)",
    "jaxlib": "XLA/CUDA wheels (storage budget)",
}


@dataclass
class ClosureReport:
    """What ``declare --with-deps`` did: declared, already in the set, and not declarable (with why)."""

    declared: dict[str, str] = field(default_factory=dict)       # name -> version written
    present: list[str] = field(default_factory=list)              # already in the set, left alone
    failed: dict[str, str] = field(default_factory=dict)          # name -> reason
    conflicts: list[str] = field(default_factory=list)            # a set member a dependent's specifier excludes
    # filled by pipeline.policy.settle once check's rules have run over the result:
    unsupported: dict[str, list[str]] = field(default_factory=dict)   # name -> "TARGET: reason" entries added
    extras: dict[str, list[str]] = field(default_factory=dict)        # name -> "+extra" enabled, "-extra" withdrawn
    check: list[str] = field(default_factory=list)                    # check failures left on what it touched


def requirements_of(decl: Declaration, envs: Sequence[Environment], with_test_deps: bool = False,
                    extras: Collection[str] = ()) -> list[Requirement]:
    """The requirements ``decl`` needs in at least one supported environment it is installed in: its base
    requirements and those the ``extras`` a dependent asks for (``markdown-it-py[linkify]``) add."""
    texts: list[str] = list(decl.dependencies)
    if with_test_deps and decl.test is not None:
        texts += list(decl.test.requires)
    admitted = [e for e in envs if admits(decl.requires_python, e)]
    wanted = ("", *sorted(canonicalize_name(x) for x in extras))
    out = []
    for text in texts:
        r = Requirement(text)
        if r.marker is None or any(_holds(r.marker, e, x) for e in admitted for x in wanted):
            out.append(r)
    return out


def left_out_reason(name: str) -> str | None:
    """Why a project is never declared by a closure walk (``LEFT_OUT``), if it is not."""
    for pattern, why in LEFT_OUT.items():
        if fnmatch.fnmatchcase(name, pattern):
            return f"left out: {why}"
    return None


def _one_line(e: Exception) -> str:
    """The error in one line: its first line, and its last when the first only introduces the detail."""
    text = f"{'' if isinstance(e, WheelproofError) else type(e).__name__ + ': '}{e}".strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _holds(marker: Marker, env: Environment, extra: str = "") -> bool:
    return marker.evaluate({**env.markers, "extra": extra})


def declare_closure(names: Iterable[str], *, index: SimpleIndex, store: Store | None = None,
                    root: Path = DECLARATIONS_DIR, with_test_deps: bool = False,
                    log: Callable[[str], None] = print) -> ClosureReport:
    """Declare ``names`` (each ``NAME`` or ``NAME==VERSION``) and every project their closure needs."""
    from pipeline.realise.declare import declare, supported_environments

    envs = supported_environments(root)
    store = store or Store()
    have = load_all(root)
    report = ClosureReport()
    wanted: dict[str, SpecifierSet] = {}
    explicit: dict[str, str] = {}
    queue: deque[str] = deque()
    for spec in names:
        r = Requirement(spec)
        n = str(canonicalize_name(r.name))
        explicit[n] = spec
        wanted[n] = r.specifier
        queue.append(n)
    seen: set[str] = set()
    walked: dict[str, Declaration] = {}        # what the walk has read (declared or already in the set)
    asked: dict[str, set[str]] = {}            # the extras dependents ask of each project
    followed: dict[str, set[str]] = {}         # the extras whose requirements were walked
    while queue:
        n = queue.popleft()
        if n in seen:
            continue
        seen.add(n)
        step = f"[{len(seen)}/{len(seen) + len(set(queue) - seen)}]"
        if (why := left_out_reason(n)) is not None and n not in have:
            report.failed[n] = why
            log(f"{step} {n}: {why}")
            continue
        if n in have and n not in explicit:
            report.present.append(n)
            decl = have[n]
            if wanted.get(n) and not wanted[n].contains(decl.version, prereleases=True):
                report.conflicts.append(f"{n}: the set has {decl.version}, a dependent requires {n}{wanted[n]}")
        else:
            log(f"{step} {n}: resolving" + (f" (required {wanted[n]})" if wanted.get(n) else ""))
            made = _declare_one(n, explicit.get(n), wanted.get(n), declare, envs, index, store, root,
                                set(seen) | set(queue) | set(have), report, log)
            if made is None:
                continue
            decl = made
        walked[n] = decl
        follow = [n]
        while follow:  # a dependent asking a walked project for an extra has its requirements walked too
            m = follow.pop()
            followed[m] = set(asked.get(m, ()))
            for r in requirements_of(walked[m], envs, with_test_deps, followed[m]):
                dep = canonicalize_name(r.name)
                if r.specifier:
                    wanted[dep] = SpecifierSet(str(wanted.get(dep, SpecifierSet())) + "," + str(r.specifier)
                                               if wanted.get(dep) else str(r.specifier))
                asked.setdefault(dep, set()).update(canonicalize_name(x) for x in r.extras)
                if dep not in seen:
                    queue.append(dep)
                elif dep in walked and asked[dep] - followed[dep]:
                    follow.append(dep)
    return report


def _declare_one(n: str, spec: str | None, want: SpecifierSet | None, declare: Callable[..., Path],
                 envs: Sequence[Environment], index: SimpleIndex, store: Store, root: Path,
                 will_declare: set[str], report: ClosureReport, log: Callable[[str], None]) -> Declaration | None:
    pinned = spec is not None and "==" in spec
    skip: list[str] = []
    last = ""
    for _attempt in range(1 if pinned else ATTEMPTS):
        target: str | None = None
        try:
            if pinned:
                target = spec or n
            else:
                release, notes = choose_release(index, n, envs, skip, want or None)
                for note in notes:
                    log(note)
                target = f"{n}=={release.version}"
            declare(target, index=index, store=store, root=root, log=log, will_declare=will_declare)
        except Exception as e:  # one project's failure (its index page, its sdist) never stops the walk
            last = _one_line(e)
            if pinned or target is None:
                break  # a pinned version, or no release left to choose
            version = target.split("==", 1)[1]
            log(f"{n} {version}: cannot declare ({last[:300]}); trying an older release")
            skip.append(version)
            continue
        decl = load(path_for(n, root), root)
        report.declared[n] = decl.version
        return decl
    report.failed[n] = last or "no release could be declared"
    log(f"{n}: not declared: {report.failed[n]}")
    return None
