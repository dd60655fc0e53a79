"""install: the closure of NAME… from a snapshot into a virtual environment, pinned, sandboxed, verified.

No resolver: a snapshot holds one version per project, so the closure is read off each wheel's core
metadata (PEP 658 ``.metadata`` files, PEP 508 requirements and markers evaluated for the target
interpreter with :mod:`packaging`); a requirement the snapshot's version does not satisfy is an error.
Every wheel is read through the snapshot (blocks verified) and checked against the SHA-256 its PEP 691
page gives. The work happens on a copy of the environment: pypa/installer unpacks the wheels (PEP 427)
inside the bubblewrap sandbox (:class:`pipeline.realise.sandbox.Sandbox`) with only that copy writable,
mounted at the environment's own path; each installed distribution's top-level modules are then imported
there, one distribution at a time. Anything the installation or an import writes outside the new
RECORDs is a finding naming the files, and the copy must pass ``verify-env``; only then does it
replace the environment (two renames). On any unexcepted finding the environment is left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import installer
import packaging
from packaging.metadata import Metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from pipeline.client.allow import Allowlist
from pipeline.client.layout import Layout, probe
from pipeline.client.source import SnapshotView, SnapshotWheel
from pipeline.client.verify_env import Finding, Report, installed_distributions, verify_env
from pipeline.model.errors import WheelproofError
from pipeline.model.limits import DEFAULT_LIMITS
from pipeline.realise.sandbox import Bind, open_sandbox, python_prefix

__all__ = ["InstallError", "Planned", "install", "plan"]

_TARGET = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from packaging.markers import default_environment
from packaging.tags import sys_tags
print(json.dumps({"markers": default_environment(), "tags": [str(t) for t in sys_tags()]}))
"""
_INSTALL = r"""
import json, sys
sys.path.insert(0, "/tools")
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
scheme, interpreter, wheels = json.loads(sys.argv[1])
for wheel in wheels:
    with WheelFile.open(wheel) as source:
        install(source, SchemeDictionaryDestination(scheme, interpreter=interpreter, script_kind="posix"),
                {"INSTALLER": b"wheelproof\n"})
"""
_IMPORT = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"


class InstallError(WheelproofError):
    pass


@dataclass(frozen=True)
class Planned:
    wheel: SnapshotWheel
    version: str
    required_by: str


def _target(python: Path) -> tuple[dict[str, str], list[str]]:
    import subprocess

    parent = str(Path(packaging.__file__).resolve().parent.parent)
    proc = subprocess.run([str(python), "-I", "-S", "-c", _TARGET, parent], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise InstallError(f"{python}: could not ask it for its markers and tags: {proc.stderr[-300:]}")
    d = json.loads(proc.stdout)
    return d["markers"], d["tags"]


def plan(names: list[str], snapshot: SnapshotView, markers: dict[str, str], tags: list[str]) -> list[Planned]:
    """The closure of ``names`` in ``snapshot`` for an interpreter with ``markers`` and ``tags``."""
    rank = {t: i for i, t in enumerate(tags)}
    chosen: dict[str, tuple[Planned, Metadata, set[str]]] = {}
    queue: list[tuple[Requirement, str]] = []
    for n in names:
        try:
            queue.append((Requirement(n), "the command line"))
        except ValueError as e:
            raise InstallError(f"{n!r}: not a requirement ({e})") from e
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        if name not in chosen:
            wheels = snapshot.wheels(name)
            if not wheels:
                raise InstallError(f"{name} (required by {parent}) is not in {snapshot.label}")
            fits = [(min(rank[str(t)] for t in parse_wheel_filename(w.filename)[3] if str(t) in rank), w.filename, w)
                    for w in wheels if any(str(t) in rank for t in parse_wheel_filename(w.filename)[3])]
            if not fits:
                raise InstallError(f"{name}: no wheel in the snapshot runs on {markers.get('python_full_version')} "
                                   f"{markers.get('platform_machine')} ({', '.join(w.filename for w in wheels)})")
            wheel = min(fits)[2]
            raw = snapshot.read(f"simple/{name}/{wheel.filename}.metadata")
            meta = Metadata.from_email(raw, validate=False)
            if meta.requires_python and not meta.requires_python.contains(markers["python_full_version"],
                                                                           prereleases=True):
                raise InstallError(f"{name} {meta.version} requires Python {meta.requires_python}")
            chosen[name] = (Planned(wheel, str(meta.version), parent), meta, set())
            todo_extras = [""] + sorted(req.extras)
        else:
            todo_extras = sorted(set(req.extras) - chosen[name][2])
        planned, meta, done = chosen[name]
        if req.specifier and not req.specifier.contains(Version(planned.version), prereleases=True):
            raise InstallError(f"{parent} requires {req}, but the snapshot has {name} {planned.version} (one version "
                               "per project; no resolver)")
        for extra in todo_extras:
            done.add(extra)
            for dep in meta.requires_dist or []:
                if dep.marker is None or dep.marker.evaluate({**markers, "extra": extra}):
                    queue.append((dep, f"{name} {planned.version}" + (f"[{extra}]" if extra else "")))
    return [p for p, _, _ in chosen.values()]


def _tree(root: Path) -> dict[Path, str]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath) / f
            out[p] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _modules(layout: Layout, claims: tuple[Path, ...]) -> list[str]:
    names = set()
    for p in claims:
        for site in layout.site_dirs:
            if p.parent == site and p.suffix in (".py", ".so") and not p.name.startswith("_"):
                names.add(p.name.split(".")[0])
            elif p.parent.parent == site and p.name == "__init__.py" and not p.parent.name.startswith("_"):
                names.add(p.parent.name)
    return sorted(names)


def install(names: list[str], into: Path, snapshot: SnapshotView, allow: Allowlist | None = None,
            log: object = None) -> Report:
    allow = allow or Allowlist()
    into = into.absolute()
    layout = probe(into / "bin" / "python")
    if layout.prefix != into:
        raise InstallError(f"{into} is not a virtual environment (its python's prefix is {layout.prefix}); "
                           "create one with `python -m venv --without-pip`")
    markers, tags = _target(layout.python)
    wanted = plan(names, snapshot, markers, tags)
    present = {d.name: d.version for d in installed_distributions(layout, [])}
    todo = []
    for p in wanted:
        have = present.get(p.wheel.project)
        if have is None:
            todo.append(p)
        elif have != p.version:
            raise InstallError(f"{into}: {p.wheel.project} {have} is installed; the snapshot has {p.version} "
                               "(install does not replace; use a new environment)")
    extra: list[Finding] = []
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=f".{into.name}.wheelproof-") as tmp:
        work = Path(tmp)
        staging = work / "env"
        shutil.copytree(into, staging, symlinks=True)
        wheels = work / "wheels"
        wheels.mkdir()
        for p in todo:
            (wheels / p.wheel.filename).write_bytes(snapshot.wheel_bytes(p.wheel))
        staged = layout.staged(staging)
        binds = [Bind(staging, str(into), writable=True), Bind(wheels, "/wheels"),
                 Bind(Path(installer.__file__).resolve().parent, "/tools/installer")]
        if not layout.base_prefix.resolve().is_relative_to(python_prefix()):
            binds.append(Bind(layout.base_prefix.resolve(), str(layout.base_prefix.resolve())))
        box = open_sandbox(binds)
        env = {"LANG": "C.UTF-8"}
        scheme = {"purelib": str(layout.site_dirs[0]), "platlib": str(layout.site_dirs[-1]),
                  "scripts": str(layout.scripts), "data": str(layout.data),
                  "headers": str(layout.prefix / "include" / "site" / f"python{layout.version}")}
        python = box.path(str(layout.python))
        before = _tree(staging)
        args = json.dumps([{k: box.path(v) for k, v in scheme.items()}, str(layout.python),
                           [box.path(f"/wheels/{p.wheel.filename}") for p in todo]])
        status = box.run([python, "-I", "-S", "-c", _INSTALL, args], env=env, limits=DEFAULT_LIMITS, timeout=600,
                         log_path=work / "install.log").status
        if status != 0:
            raise InstallError(f"installing {', '.join(p.wheel.filename for p in todo)} into {into} failed in the "
                               f"sandbox (exit {status}): {(work / 'install.log').read_text()[-800:]}")
        after = _tree(staging)
        new = [d for d in installed_distributions(staged, []) if d.name in {p.wheel.project for p in todo}]
        own = {c for d in new for c in d.claims} | {d.dist_info / "RECORD" for d in new}
        outside = sorted(staged.subject(staged.env_path(h)) for h, v in after.items()
                         if before.get(h) != v and staged.env_path(h) not in own)
        if outside:
            extra.append(Finding("install-wrote", outside[0], f"installing wrote {len(outside)} files outside the "
                                 f"new RECORDs: {', '.join(outside[:8])}"))
        for d in new:
            mods = _modules(staged, d.claims)
            if not mods:
                continue
            before = after
            status = box.run([python, "-I", "-B", "-c", _IMPORT, *mods], env=env, limits=DEFAULT_LIMITS,
                             timeout=300, log_path=work / f"import-{d.name}.log").status
            after = _tree(staging)
            touched = sorted(staged.subject(staged.env_path(h)) for h in set(before) | set(after)
                             if before.get(h) != after.get(h))
            if touched:
                extra.append(Finding("import-wrote", f"dist:{d.name}", f"importing {', '.join(mods)} wrote "
                                     f"{len(touched)} files: {', '.join(touched[:8])}"))
            if status != 0:
                tail = (work / f"import-{d.name}.log").read_text(errors="replace").strip().splitlines()[-1:]
                extra.append(Finding("import-failed", f"dist:{d.name}",
                                     f"importing {', '.join(mods)} failed in the sandbox: {' '.join(tail)[:300]}"))
        report = verify_env(staged, snapshot, allow)
        report.python = str(layout.python)
        for f in extra:
            a = allow.match(f.kind, f.subject)
            report.findings.insert(0, Finding(f.kind, f.subject, f.detail, a.origin + f" ({a.reason})") if a else f)
        if not report.failing:
            os.rename(into, work / "old")
            os.rename(staging, into)
    print(f"install: {len(todo)} wheels ({', '.join(p.wheel.filename for p in todo) or 'none new'}) "
          + ("installed" if not report.failing else f"NOT installed: {into} is unchanged"), file=sys.stderr)
    return report
