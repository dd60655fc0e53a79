"""``declare NAME==VERSION``: write a declaration from the package index.

It pins the sdist and the upstream wheels by hash, reads the sdist's
``[build-system]``, and resolves the build requirements to exact wheels with
pip's resolver (``--dry-run --report``), as of the upstream wheel's upload time
(PEP 700 ``upload-time``) and with the backend at the version named by the
upstream wheel's ``WHEEL`` ``Generator:`` line, so the rebuild can match it.
Requirements the backend asks for dynamically (``get_requires_for_build_wheel``)
are found by asking it, offline, in the sandbox, and resolved in turn.

Regenerating an existing declaration edits it with tomlkit, keeping comments,
order, and hand-written overrides (``build.extra-inputs``, ``build.environment``,
``[test]``).

``extras`` lists the extras the set offers: ``declare`` offers each ``Provides-Extra`` whose
closure is in the set (or will be, given the names about to be declared) and writes the others as
comments with the reason; a reviewer's choice in an existing file is kept (pipeline/model/extras.py).
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import tomlkit
from packaging.metadata import parse_email
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from pipeline.model import environments
from pipeline.model.conditions import BuildConditions
from pipeline.model.declaration import (
    DECLARATIONS_DIR,
    SCHEMA,
    Artifact,
    BuildSpec,
    Declaration,
    Deselection,
    load,
    load_all,
    parse,
    path_for,
)
from pipeline.model.derivation import toolchain
from pipeline.model.errors import DeclarationError, IndexError_, Problem, WheelproofError
from pipeline.model.extras import (
    ExtraChoice,
    choice_comment,
    is_valid_extra,
    keep_choice,
    member_of,
    previous_choice,
    propose,
)
from pipeline.model.filenames import sdist_problem, wheel_problem
from pipeline.model.limits import DEFAULT_LIMITS
from pipeline.model.urlpolicy import url_problem
from pipeline.realise.backends import sandbox_cannot_run
from pipeline.realise.choose import Release, candidates, choose_release
from pipeline.realise.fetch import fetch
from pipeline.realise.index import IndexFile, SimpleIndex
from pipeline.store.local import Store, atomic_write
from pipeline.wheel.conditions import infer_from_archives
from pipeline.wheel.setuptools_era import SetuptoolsBound, infer_setuptools_bounds, read_metadata_evidence, tightest

GENERATOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\(?\s*v?(\d[^\s)]*)\)?")
# The project whose version a WHEEL "Generator:" name reports.
GENERATOR_PROJECT = {
    "bdist_wheel": "wheel",
    "setuptools": "setuptools",
    "flit": "flit-core",
    "flit_core": "flit-core",
    "hatchling": "hatchling",
    "hatch": "hatchling",
    "poetry-core": "poetry-core",
    "poetry": "poetry-core",
    "pdm-backend": "pdm-backend",
    "pdm-pep517": "pdm-pep517",
}
# The reason ``declare`` writes for an environment no upstream wheel serves (rewritten on each run).
NO_WHEEL = "no upstream wheel of"
# PEP 517's default for a source tree with no [build-system].
LEGACY_BUILD_SYSTEM = {"requires": ["setuptools>=40.8.0"], "build-backend": "setuptools.build_meta:__legacy__"}


@dataclass(frozen=True)
class WheelFacts:
    generator: str | None
    source_date_epoch: int
    requires_python: str | None
    extras: list[str]
    dependencies: list[str]


def wheel_facts(path: Path) -> WheelFacts:
    """Generator, newest member timestamp, and core metadata of a wheel (PEP 427, PEP 566)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = [n for n in names if n.count("/") == 1 and n.split("/")[0].endswith(".dist-info")]
        wheel_file = next(n for n in dist_info if n.endswith("/WHEEL"))
        metadata_file = next(n for n in dist_info if n.endswith("/METADATA"))
        wheel = BytesParser().parsebytes(zf.read(wheel_file))
        raw, _ = parse_email(zf.read(metadata_file))
        newest = max(calendar.timegm((*i.date_time, 0, 0, 0)) for i in zf.infolist())
    return WheelFacts(
        wheel.get("Generator"),
        max(newest, 315532800),
        raw.get("requires_python"),
        list(raw.get("provides_extra", [])),
        list(raw.get("requires_dist", [])),
    )


def sdist_build_system(path: Path) -> dict[str, Any]:
    """The ``[build-system]`` table of an sdist's top-level pyproject.toml (PEP 518/517)."""
    with tarfile.open(path) if not path.name.endswith(".zip") else _ZipAsTar(path) as tf:
        for name in tf.getnames():
            parts = name.split("/")
            if len(parts) == 2 and parts[1] == "pyproject.toml":
                f = tf.extractfile(name)
                if f is not None:
                    doc = tomllib.loads(f.read().decode())
                    bs = doc.get("build-system")
                    if bs:
                        bs.setdefault("build-backend", LEGACY_BUILD_SYSTEM["build-backend"])
                        return bs
    return dict(LEGACY_BUILD_SYSTEM)


class _ZipAsTar:
    def __init__(self, path: Path):
        self._zf = zipfile.ZipFile(path)

    def __enter__(self) -> _ZipAsTar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zf.close()

    def getnames(self) -> list[str]:
        return self._zf.namelist()

    def extractfile(self, name: str) -> Any:
        return self._zf.open(name)


def generator_pin(generator: str | None, requires: list[str]) -> list[str]:
    """Constraints that make the backend the one that produced the upstream wheel."""
    if not generator:
        return []
    m = GENERATOR.match(generator)
    if not m or m.group(1) not in GENERATOR_PROJECT:
        return []
    project, version = GENERATOR_PROJECT[m.group(1)], m.group(2)
    required = {canonicalize_name(Requirement(r).name) for r in requires}
    if project == "wheel" and "setuptools" in required:
        # setuptools >= 70.1 writes wheels itself ("Generator: setuptools"); this wheel came from
        # the older split, where the `wheel` project's bdist_wheel wrote it.
        return [f"wheel=={version}", "setuptools<70.1"]
    if project in required:
        return [f"{project}=={version}"]
    return []


def setuptools_bounds(generator: str | None, requires: list[str], wheel: Path, sdist: Path,
                      sdist_filename: str) -> list[SetuptoolsBound]:
    """The tightest bound on the setuptools release upstream's metadata shows (pipeline/wheel/setuptools_era.py),
    for a wheel setuptools (or the ``wheel`` project's bdist_wheel on setuptools) wrote."""
    m = GENERATOR.match(generator or "")
    if not m or GENERATOR_PROJECT.get(m.group(1)) not in ("setuptools", "wheel"):
        return []
    if "setuptools" not in {canonicalize_name(Requirement(r).name) for r in requires}:
        return []
    return tightest(infer_setuptools_bounds(read_metadata_evidence(wheel, sdist, sdist_filename)))


def bounds_comment(bounds: list[SetuptoolsBound], dated: bool = True) -> str:
    """The one comment line explaining a setuptools bound in the declaration."""
    return (f"inputs: the newest setuptools{' as of the upload' if dated else ''} with {bounds[0].requirement}: "
            + "; ".join(b.reason for b in bounds))


@dataclass(frozen=True)
class Resolved:
    name: str
    version: str
    artifact: Artifact


def pip_reason(stderr: str) -> str:
    """pip's last error line, without the list of every version it saw: each fallback is one line."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("ERROR:")] or lines[-1:] or ["pip gave no reason"]
    return re.sub(r" \(from versions: [^)]*\)", "", errors[-1])


def build_constraints(pin: list[str], bounds: list[SetuptoolsBound]) -> list[str]:
    """What the build requirements are resolved with: the generator pin, then each setuptools bound once."""
    return pin + list(dict.fromkeys(b.requirement for b in bounds))


def resolve_build_inputs(requires: list[str], pin: list[str], bounds: list[SetuptoolsBound], index: SimpleIndex,
                         before: str | None, log: Callable[[str], None]
                         ) -> tuple[list[Resolved], list[str], list[SetuptoolsBound], str | None]:
    """Resolve the build requirements as close to upstream's build as the index allows: with the generator
    pin and the setuptools bound, as of upstream's upload; then without the bound, then without the pin;
    then the same again without the date (a 2017 upload whose backend defaults to ``setuptools>=40.8.0``,
    released in 2019). Each step down is one line; returns what resolved and the pin, bounds and date used."""
    ladder = [(pin, bounds, before)]
    if bounds:
        ladder.append((pin, [], before))
    if pin:
        ladder.append(([], [], before))
    if before is not None:
        ladder += [(p, b, None) for p, b, _ in ladder]
    for step, (p, b, when) in enumerate(ladder):
        requirements = requires + build_constraints(p, b)
        try:
            return resolve(requirements, index, when), p, b, when
        except IndexError_ as e:
            if step == len(ladder) - 1:
                raise
            np, nb, nwhen = ladder[step + 1]
            change = ("without the setuptools bound" if nb != b and np == p else
                      "without the generator pin" if np != p and nwhen == when else
                      f"with the newest releases, not those as of {when}")
            log(f"note: {e}{f' as of {when}' if when else ''}; resolving {change}")
    raise AssertionError("unreachable: the ladder is never empty")


def resolve(requirements: list[str], index: SimpleIndex, before: str | None) -> list[Resolved]:
    """Exact wheels for ``requirements`` on this interpreter, by pip's resolver (no install)."""
    if not requirements:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
               "--only-binary", ":all:", "--quiet", "--report", str(report), "--index-url", index.base_url]
        if before:
            cmd += ["--uploaded-prior-to", before]
        proc = subprocess.run(cmd + requirements, capture_output=True, text=True)
        if proc.returncode != 0:
            raise IndexError_(f"cannot resolve build requirements {requirements}: {pip_reason(proc.stderr)}")
        doc = json.loads(report.read_text())
    out = []
    for item in doc["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        url = item["download_info"]["url"]
        filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
        listed = index.file(name, filename)
        sha = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256") or listed.sha256
        if not sha:
            raise IndexError_(f"no sha256 for {filename} on the index")
        out.append(Resolved(canonicalize_name(name), version,
                            _checked(Artifact(filename, listed.url, sha, listed.size), "wheel")))
    return sorted(out, key=lambda r: r.name)


def _pick_release(index: SimpleIndex, name: str, version: str,
                  envs: Sequence[environments.Environment]) -> Release:
    """``name==version`` as the index lists it, with the wheels chosen for the supported environments."""
    for c in candidates(index, name, envs):
        if Version(c.release.version) == Version(version):
            return c.release
    if not any(not f.yanked and not f.filename.endswith(".whl") and _version_of(f.filename) == Version(version)
               for f in index.files(name)):
        raise IndexError_(f"{name} {version} has no sdist on {index.base_url}")
    raise IndexError_(f"{name} {version} has no wheel for a supported environment on {index.base_url} "
                      "to compare a rebuild with")


def _version_of(filename: str) -> Version | None:
    try:
        return parse_sdist_filename(filename)[1]
    except ValueError:
        return None


def _checked(a: Artifact, kind: str) -> Artifact:
    """An artifact the index named, held to the declaration rules before it is fetched or staged."""
    problem = (wheel_problem if kind == "wheel" else sdist_problem)(a.filename) or url_problem(a.url)
    if problem:
        raise IndexError_(f"the index lists an unusable file {a.filename!r} at {a.url!r}: {problem}")
    return a


def _artifact(f: IndexFile) -> Artifact:
    if not f.sha256:
        raise IndexError_(f"the index gives no sha256 for {f.filename}")
    return _checked(Artifact(f.filename, f.url, f.sha256, f.size), "wheel" if f.filename.endswith(".whl") else "sdist")


def _sized(store: Store, artifact: Artifact) -> Artifact:
    """``artifact`` with its size, from the verified stored copy when the index gave none."""
    if artifact.size is not None:
        return artifact
    return replace(artifact, size=store.verified_path(artifact.sha256).stat().st_size)


def choose_extras(name: str, version: str, facts: WheelFacts, root: Path, existing: Declaration | None,
                  will_declare: Collection[str] = (), log: Callable[[str], None] = print) -> list[ExtraChoice]:
    """Which of the wheel's ``Provides-Extra`` the declaration offers: those whose closure is in the set
    under ``root`` (plus ``will_declare``) in every supported environment, the existing file's reviewed
    choice kept."""
    provided = []
    for e in facts.extras:
        normal = canonicalize_name(e)
        if is_valid_extra(normal):
            provided.append(normal)
        else:
            log(f"{name} {version}: ignoring Provides-Extra {e!r}: not a valid extra name (PEP 685)")
    env_file = root / "environments.toml"
    envs = environments.load(env_file if env_file.exists() else environments.ENVIRONMENTS_FILE)
    members = {n: member_of(d, envs) for n, d in load_all(root).items() if n != canonicalize_name(name)}
    proposal = propose(name, version, provided, facts.dependencies, facts.requires_python, members, envs,
                       will_declare)
    previous = None
    if existing is not None:
        source = tomlkit.parse(existing.path.read_text(encoding="utf-8")).get("extras")
        previous = previous_choice(existing, source.as_string() if isinstance(source, tomlkit.items.Array) else "")
    choices = keep_choice(proposal, previous)
    for c in choices:
        if c.note:
            log(f"{name} {version}: extra {c.name!r}: {c.note}")
        elif not c.offered:
            log(f"{name} {version}: extra {c.name!r} not offered: {c.reason}")
    if previous is not None:
        for gone in sorted(previous.offered - {c.name for c in choices}):
            log(f"{name} {version}: extra {gone!r} was offered, but this version does not provide it")
    return choices


def supported_environments(root: Path) -> tuple[environments.Environment, ...]:
    """The supported environments of the declarations under ``root`` (else the shipped file's)."""
    env_file = root / "environments.toml"
    return environments.load(env_file if env_file.exists() else environments.ENVIRONMENTS_FILE)


def declare(spec: str, *, index: SimpleIndex | None = None, store: Store | None = None,
            root: Path = DECLARATIONS_DIR, log: Callable[[str], None] = print,
            will_declare: Collection[str] = (), skip: Sequence[str] = ()) -> Path:
    """Write (or regenerate) the declaration for ``NAME==VERSION``; returns its path.

    ``will_declare``: names about to be declared alongside (their presence counts when choosing extras).
    ``skip``: versions not to choose for a bare ``NAME`` (tried before and refused).
    """
    from pipeline.realise.rebuild import PRIMARY, run_builder  # the sandbox asks the backend for dynamic requirements

    req = Requirement(spec)
    pins = [s for s in req.specifier if s.operator == "=="]
    index = index or SimpleIndex()
    store = store or Store()
    envs = supported_environments(root)
    if not req.specifier:
        log(f"{req.name}: choosing a release from {index.base_url}")
        release, notes = choose_release(index, req.name, envs, skip)
        for note in notes:
            log(note)
        name, version = req.name, release.version
    elif len(pins) == 1 and len(req.specifier) == 1:
        name, version = req.name, pins[0].version
        release = _pick_release(index, name, version, envs)
    else:
        raise WheelproofError(f"declare needs NAME==VERSION (or NAME for the latest release), got {spec!r}")
    sdist_file, wheel_files = release.sdist, list(release.wheels)
    what = f"declare {name}=={version}"
    log(f"{name} {version}: {len(wheel_files)} wheel(s) for the supported environments"
        + (f", {release.ignored} serving none left out" if release.ignored else "")
        + (f"; no wheel for {len(release.uncovered)} environment(s): {', '.join(release.uncovered)}"
           if release.uncovered else ""))
    sdist = _artifact(sdist_file)
    wheels = [_artifact(w) for w in wheel_files]
    fetch(store, sdist, what=what, log=log)
    sdist = _sized(store, sdist)
    path = path_for(name, root)
    existing = load(path, root) if path.exists() else None
    if not release.buildable:
        raise WheelproofError(f"{what}: no upstream wheel of this release installs on this build machine, "
                              "so a rebuild could not be compared with one")
    kept = tuple(u for u in existing.unsupported if not u.reason.startswith(NO_WHEEL)) if existing else ()
    auto = tuple(Deselection(e.name, f"{NO_WHEEL} {name} {version} for this environment")
                 for e in envs if e.name in release.uncovered and environments.left_out(kept, e) is None)
    provisional = Declaration(path, name, version, None, (), (), sdist, tuple(wheels),
                              BuildSpec("", (), (), None, 315532800, ()), unsupported=kept + auto)
    upstream = provisional.wheel_for_build()
    fetch(store, upstream, what=what, log=log)
    for w in wheels:
        fetch(store, w, what=what, log=log)  # every published wheel's size is pinned
    wheels = [_sized(store, w) for w in wheels]
    provisional = replace(provisional, wheels=tuple(wheels))
    facts = wheel_facts(store.verified_path(upstream.sha256))
    build_system = sdist_build_system(store.verified_path(sdist.sha256))
    requires = list(build_system.get("requires", []))
    warnings = sandbox_cannot_run(build_system["build-backend"], requires)
    for warning in warnings:
        log(f"warning: {name} {version}: {warning}")
    no_rebuild = existing.no_rebuild if existing else None
    if warnings and no_rebuild is None:
        no_rebuild = "; ".join(w.split(": the rebuild will fail")[0] for w in warnings)
        log(f"{name} {version}: writing rebuild = false (upstream's bytes published as such); review the reason")
    before = next((w.upload_time for w in wheel_files if w.filename == upstream.filename), None)
    constraints = generator_pin(facts.generator, requires)
    bounds = setuptools_bounds(facts.generator, requires, store.verified_path(upstream.sha256),
                               store.verified_path(sdist.sha256), sdist.filename)
    for b in bounds:
        log(f"{name} {version}: {b.requirement}: {b.reason}")
    choices = choose_extras(name, version, facts, root, existing, will_declare, log)
    log(f"{name} {version}: backend {build_system['build-backend']}, generator {facts.generator!r}, "
        f"resolving {requires + build_constraints(constraints, bounds)} as of {before}")
    resolved, pin, bounds, before = resolve_build_inputs(requires, constraints, bounds, index, before, log)
    constraints = build_constraints(pin, bounds)
    conditions = infer_from_archives(store.verified_path(upstream.sha256), store.verified_path(sdist.sha256),
                                     sdist.filename, facts.generator)
    log(f"{name} {version}: build conditions {conditions.describe() or 'none'} (inferred from the upstream wheel "
        "and sdist; evidence in [build.conditions.evidence])")
    extra_inputs = existing.build.extra_inputs if existing else ()
    environment = existing.build.environment if existing else ()
    settings = existing.build.config_settings if existing else ()
    if not settings and (universal := universal_settings(upstream.filename, build_system["build-backend"])):
        settings = universal
        log(f"{name} {version}: config-settings --build-option=--universal: upstream's wheel is tagged "
            "py2.py3, which setuptools writes only with --universal")
    for _round in range(3):
        build = BuildSpec(build_system["build-backend"], tuple(build_system.get("backend-path", [])),
                          tuple(requires), facts.generator, facts.source_date_epoch,
                          tuple(r.artifact for r in resolved), extra_inputs, environment,
                          existing.build.limits if existing else DEFAULT_LIMITS, settings, conditions)
        decl = replace(provisional, requires_python=facts.requires_python,
                       extras=tuple(c.name for c in choices if c.offered),
                       dependencies=tuple(facts.dependencies), build=build, no_rebuild=no_rebuild)
        for a in build.all_inputs + toolchain():
            fetch(store, a, what=what, log=log)
        build = replace(build, inputs=tuple(_sized(store, a) for a in build.inputs))
        decl = replace(decl, build=build)
        if no_rebuild is not None:
            break  # the backend cannot run here, so it is not asked for dynamic requirements
        log(f"{name} {version}: asking the backend for its dynamic build requirements (in the sandbox)")
        with tempfile.TemporaryDirectory(dir=store.tmp, prefix="declare-") as tmp:
            run = run_builder(store, decl, PRIMARY, Path(tmp) / "requires", phase="requires", timeout=600)
        if run.status != 0 and build.config_settings and build.backend.startswith("setuptools"):
            # setuptools < 57 passes --global-option to egg_info too, which refuses bdist_wheel's options
            # (--universal): its dynamic requirements do not depend on them, so ask without them
            log(f"{name} {version}: the backend refused the config-settings when asked for its requirements; "
                "asking without them (the build still uses them)")
            bare = replace(decl, build=replace(build, config_settings=()))
            with tempfile.TemporaryDirectory(dir=store.tmp, prefix="declare-") as tmp:
                run = run_builder(store, bare, PRIMARY, Path(tmp) / "requires", phase="requires", timeout=600)
        if run.status != 0:
            raise WheelproofError(f"{what}: asking the backend for its requirements failed:\n{run.log[-3000:]}")
        missing = run.result.get("missing_dynamic", [])
        if not missing:
            break
        log(f"{name} {version}: the backend also asks for {missing}")
        requires_all = requires + constraints + [m for m in missing if m not in requires]
        resolved = resolve(requires_all, index, before)
    else:
        raise WheelproofError(f"{what}: dynamic build requirements did not settle: {missing}")
    write(decl, existing_path=path if path.exists() else None, resolved_before=before, extras=choices,
          inputs_note=bounds_comment(bounds, dated=before is not None) if bounds else None)
    log(f"wrote {path}")
    return path


def _array(values: list[str]) -> Any:
    arr = tomlkit.array()
    arr.extend(values)
    if len(values) > 1:
        arr.multiline(True)
    return arr


def _aot(artifacts: tuple[Artifact, ...] | list[Artifact]) -> Any:
    aot = tomlkit.aot()
    for a in artifacts:
        t = tomlkit.table()
        t["filename"] = a.filename
        t["url"] = a.url
        t["sha256"] = a.sha256
        if a.size is not None:  # an unsized artifact is written only to be refused below
            t["size"] = a.size
        aot.append(t)
    return aot


def extras_array(choices: Sequence[ExtraChoice]) -> Any:
    """The ``extras`` array: offered names, and one comment line per extra not offered, with its reason."""
    if all(c.offered for c in choices):
        return _array([c.name for c in choices])
    arr = tomlkit.array()
    for c in choices:
        if c.offered:
            arr.add_line(c.name)
        else:
            arr.add_line(comment=choice_comment(c))
    arr.add_line(indent="")
    return arr


_HEADER = re.compile(r"\A# [^\n]*: written by `python -m pipeline declare`[^\n]*")


def _header(decl: Declaration) -> str:
    return f"# {decl.name} {decl.version}: written by `python -m pipeline declare`; review before committing."


def universal_settings(wheel_filename: str, backend: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """PEP 517 config_settings reproducing a setuptools ``py2.py3`` tag (bdist_wheel ``--universal``)."""
    tags = {t.interpreter for t in parse_wheel_filename(wheel_filename)[3]}
    if backend.startswith("setuptools") and {"py2", "py3"} <= tags:
        return (("--build-option", ("--universal",)),)
    return ()


def set_conditions(build: Any, conditions: BuildConditions) -> None:
    """Write ``[build.conditions]`` (and its evidence) into a tomlkit ``[build]`` table, or drop it."""
    if "conditions" in build:
        del build["conditions"]
    if not conditions.declared():
        return
    table = tomlkit.table()
    for key, value in conditions.declared().items():
        table[key] = value
    evidence = tomlkit.table()
    for key, text in conditions.evidence:
        evidence[key] = text
    table["evidence"] = evidence
    build["conditions"] = table


def write(decl: Declaration, existing_path: Path | None = None, resolved_before: str | None = None,
          extras: Sequence[ExtraChoice] | None = None, inputs_note: str | None = None) -> None:
    """Write ``decl`` as TOML, editing an existing file in place so comments and order survive.

    The text is validated as any declaration is loaded before it is written: a declaration that
    would not load (an unsized input, a URL the policy refuses, ...) raises DeclarationError and
    nothing is written.
    """
    if existing_path is not None:
        doc = tomlkit.parse(existing_path.read_text())
    else:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_header(decl)[2:]))
    doc["schema"] = SCHEMA
    doc["name"] = decl.name
    doc["version"] = decl.version
    if decl.requires_python:
        doc["requires-python"] = decl.requires_python
    elif "requires-python" in doc:
        del doc["requires-python"]
    doc["extras"] = extras_array(extras) if extras is not None else _array(list(decl.extras))
    doc["dependencies"] = _array(list(decl.dependencies))
    sdist = doc.get("sdist") or tomlkit.table()
    for key, value in (("filename", decl.sdist.filename), ("url", decl.sdist.url),
                       ("sha256", decl.sdist.sha256), ("size", decl.sdist.size)):
        if value is not None:
            sdist[key] = value
    doc["sdist"] = sdist
    doc["wheels"] = _aot(decl.wheels)
    build = doc.get("build") or tomlkit.table()
    b = decl.build
    build["backend"] = b.backend
    if b.backend_path:
        build["backend-path"] = _array(list(b.backend_path))
    elif "backend-path" in build:
        del build["backend-path"]  # stale: this release's pyproject.toml has none
    build["requires"] = _array(list(b.requires))
    if b.generator:
        build["generator"] = b.generator  # a new item: a previous run's comment goes with the old one
        if inputs_note:
            build["generator"].comment(inputs_note)
    elif "generator" in build:
        del build["generator"]
    build["source-date-epoch"] = b.source_date_epoch
    if resolved_before:
        build["source-date-epoch"].comment(f"newest timestamp in the upstream wheel; inputs as of {resolved_before}")
    build["inputs"] = _aot(b.inputs)
    set_conditions(build, b.conditions)
    if b.config_settings and "config-settings" not in build:
        settings = tomlkit.inline_table()
        settings.update(b.config_settings_json())
        build["config-settings"] = settings
        build["config-settings"].comment("inferred: upstream's wheel is tagged py2.py3")
    doc["build"] = build
    if decl.no_rebuild is not None:
        doc["rebuild"] = False
        doc["rebuild-reason"] = decl.no_rebuild
    else:
        for key in ("rebuild", "rebuild-reason"):
            if key in doc:
                del doc[key]
    if decl.unsupported:
        aot = tomlkit.aot()
        for u in decl.unsupported:
            t = tomlkit.table()
            t["target"] = u.target
            t["reason"] = u.reason
            aot.append(t)
        doc["unsupported"] = aot
    elif "unsupported" in doc:
        del doc["unsupported"]
    text = _HEADER.sub(_header(decl), tomlkit.dumps(doc), count=1)
    problems: list[Problem] = []
    if parse(decl.path, text, problems) is None or problems:
        raise DeclarationError(problems or [Problem(decl.path, None, "", "the generated text does not load")])
    atomic_write(decl.path, text.encode())
