"""PEP 751 lock files (``pylock.toml``) from one snapshot, for one supported environment.

No resolver: the set is singly versioned, so a lock is the closure of the requested projects under
PEP 508 markers evaluated for one environment of ``declarations/environments.toml`` (with each
requirement's extras as ``extra``), one version per project. Each wheel that fits the environment's
tags is addressed through the IPFS gateway (``<gateway>/ipfs/<cid>/…/<wheel>``) with its sha256 and
size, so ``uv pip install -r pylock.toml`` or ``pip install -r pylock.toml`` needs no index.
The document is built and validated with ``packaging.pylock`` (https://peps.python.org/pep-0751/).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import tomlkit
from packaging.markers import Marker
from packaging.metadata import Metadata
from packaging.pylock import Package, PackageWheel, Pylock, PylockValidationError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from pipeline.model.environments import Environment, admits
from pipeline.model.errors import WheelproofError

__all__ = ["LOCK_NAME", "LockError", "LockableWheel", "environment_named", "fits", "lock", "lock_filename",
           "requires_dist", "serves"]

LOCK_NAME = re.compile(r"pylock\.toml|pylock\.[^.]+\.toml")  # PEP 751's file names
CREATED_BY = "wheelproof"


class LockError(WheelproofError):
    """A lock that cannot be made: unknown environment or name, a broken closure."""


@dataclass(frozen=True)
class LockableWheel:
    project: str
    version: str
    filename: str
    sha256: str
    size: int | None
    requires_python: str | None
    requires_dist: tuple[str, ...]
    url: str


def requires_dist(metadata: bytes, where: str) -> tuple[str, ...]:
    """The Requires-Dist lines of a wheel's core metadata (parsed by ``packaging.metadata``)."""
    try:
        meta = Metadata.from_email(metadata, validate=False)
    except Exception as e:  # packaging raises ExceptionGroup/InvalidMetadata for bad fields
        raise LockError(f"{where}: unreadable core metadata: {e}") from e
    return tuple(str(r) for r in meta.requires_dist or [])


def environment_named(name: str, environments: Iterable[Environment]) -> Environment:
    envs = {e.name: e for e in environments}
    if name not in envs:
        raise LockError(f"--environment {name!r} is not a supported environment "
                        f"(declarations/environments.toml: {', '.join(sorted(envs))})")
    return envs[name]


def lock_filename(path: Path) -> Path:
    if not LOCK_NAME.fullmatch(path.name):
        raise LockError(f"{path}: PEP 751 names lock files pylock.toml or pylock.<name>.toml")
    return path


def _env_marker(env: Environment) -> Marker:
    m = env.markers
    return Marker(f'python_version == "{m["python_version"]}" and sys_platform == "{m["sys_platform"]}" '
                  f'and platform_machine == "{m["platform_machine"]}"')


def fits(w: LockableWheel, env: Environment) -> bool:
    return bool(parse_wheel_filename(w.filename)[3] & env.tag_set)


def serves(w: LockableWheel, env: Environment) -> bool:
    """The wheel installs in ``env``: its tags fit and its Requires-Python admits the environment's Python
    (the one judgement ``doit check`` uses for a project being available there)."""
    return fits(w, env) and admits(w.requires_python, env)


def lock(available: dict[str, list[LockableWheel]], names: Iterable[str], env: Environment) -> str:
    """The PEP 751 document for ``names`` and their closure in ``env`` (TOML text, validated)."""
    by_name = {canonicalize_name(p): ws for p, ws in available.items()}
    queue: list[tuple[NormalizedName, frozenset[str], str]] = []
    for spec in names:
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            raise LockError(f"{spec!r} is not a project name: {e}") from e
        queue.append((canonicalize_name(req.name), frozenset(req.extras), "requested"))
    chosen: dict[NormalizedName, list[LockableWheel]] = {}
    deps: dict[NormalizedName, set[NormalizedName]] = {}
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    python = Version(env.markers["python_full_version"])
    while queue:
        name, extras, why = queue.pop(0)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in by_name:
            raise LockError(f"{name} ({why}) is not in this snapshot")
        wheels = [w for w in by_name[name] if fits(w, env)]
        if not wheels:
            raise LockError(f"{name} ({why}): no wheel fits {env.name}")
        for w in wheels:
            if w.requires_python and python not in SpecifierSet(w.requires_python):
                raise LockError(f"{w.filename} ({why}) requires Python {w.requires_python}, not {env.python}")
        chosen[name] = wheels
        deps.setdefault(name, set())
        for line in wheels[0].requires_dist:
            try:
                req = Requirement(line)
            except InvalidRequirement as e:
                raise LockError(f"{wheels[0].filename}: Requires-Dist {line!r}: {e}") from e
            if req.marker is not None and not any(
                    req.marker.evaluate({**env.markers, "extra": e}) for e in sorted(extras | {""})):
                continue
            dep = canonicalize_name(req.name)
            deps[name].add(dep)
            queue.append((dep, frozenset(req.extras), f"required by {name}"))
    packages = [
        Package(name=n, version=Version(ws[0].version),
                requires_python=SpecifierSet(ws[0].requires_python) if ws[0].requires_python else None,
                dependencies=[{"name": d} for d in sorted(deps[n])] or None,
                wheels=[PackageWheel(name=w.filename, url=w.url, size=w.size, hashes={"sha256": w.sha256})
                        for w in sorted(ws, key=lambda w: w.filename)])
        for n, ws in sorted(chosen.items())]
    doc = Pylock(lock_version=Version("1.0"), environments=[_env_marker(env)],
                 requires_python=SpecifierSet(f"=={env.python}.*"), created_by=CREATED_BY, packages=packages)
    try:
        doc.validate()
    except PylockValidationError as e:
        raise LockError(f"the lock for {env.name} does not validate: {e}") from e
    return tomlkit.dumps(doc.to_dict())
