"""A conda channel of the snapshot's pure wheels: ``conda/noarch/`` with one ``noarch: python`` package each.

Formats: the ``.conda`` package format (v2: a stored zip of ``metadata.json``, ``pkg-<id>.tar.zst`` and
``info-<id>.tar.zst``; https://docs.conda.io/projects/conda/en/latest/user-guide/concepts/packages.html)
and the channel's ``repodata.json`` (+ ``repodata.json.zst``,
https://docs.conda.io/projects/conda-build/en/latest/concepts/generating-index.html). None of them is
written by hand: ``whl2conda`` turns each wheel into a conda package tree (site-packages/, info/index.json,
paths.json, link.json with ``noarch: python`` and the entry points), ``conda-package-handling`` packs the
tree into a ``.conda``, and ``py-rattler``'s indexer writes the repodata.

Reproducible (the snapshot is content-addressed): whl2conda's ``timestamp`` and every mtime are fixed at
:data:`EPOCH`, file modes are normalised (0644, or 0755 when executable), the tar members are sorted,
zstd runs single-threaded, and the zip entries' times (which ``zipfile`` takes from the clock) are reset
to :data:`EPOCH` with the standard library. The PyPI→conda name table is whl2conda's packaged
conda-forge table, never a per-user cached copy, overridden by ``declarations/conda-names.toml``.

Dependencies: a Requires-Dist with an environment marker is left out (one ``noarch`` package serves
every platform; whl2conda's documented behaviour), extras are dropped (conda cannot express them), and
every remaining conda dependency must be a package of this channel or ``python``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.resources
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard
from packaging.utils import canonicalize_name

from pipeline.export.derived import DerivedCache, key_of
from pipeline.export.fileimports import FileImports
from pipeline.export.ipfs.unixfs import V1_2025, Tree
from pipeline.model.declaration import DECLARATIONS_DIR
from pipeline.model.errors import WheelproofError
from pipeline.store.local import Store

__all__ = ["CONDA_NAMES_FILE", "EPOCH", "ChannelWheel", "CondaError", "CondaPackage", "ConverterRefused", "NameMap",
           "channel", "closed", "convert", "load_names", "validate_depends"]

CONDA_NAMES_FILE = DECLARATIONS_DIR / "conda-names.toml"
EPOCH = 946684800  # 2000-01-01T00:00:00Z: every timestamp in the channel (zip cannot say 1970)
# conda's package-name rule (conda-build's `MatchSpec` names, lower-case here) and a version constraint
# Bumped when convert() changes what it makes from the same inputs, so cached packages are made again.
RECIPE = 2
_CONDA_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,127}")
_CONDA_VERSION_SPEC = re.compile(r"[0-9A-Za-z.*,<>=!~+_|-]{1,200}")
_ZSTD_LEVEL = 10  # conda-build uses 16-19; 10 keeps `doit snapshot` quick at a few % in size


class CondaError(WheelproofError):
    """A wheel that cannot become a channel package, or a bad name mapping."""


@dataclass(frozen=True)
class NameMap:
    """PyPI name → conda name: the reviewed overrides first, then whl2conda's conda-forge table."""

    overrides: dict[str, str]
    standard: dict[str, str]
    source: Path | None = None

    def conda_name(self, pypi: str) -> str:
        key = canonicalize_name(pypi)
        name = self.overrides.get(key) or self.standard.get(key) or key
        if not _CONDA_NAME.fullmatch(name):
            where = f"{self.source}: [names] {key}" if key in self.overrides else f"the name {pypi!r}"
            raise CondaError(f"{where}: {name!r} is not a conda package name (want {_CONDA_NAME.pattern})")
        return name


def load_names(path: Path = CONDA_NAMES_FILE) -> NameMap:
    """The overridable mapping: ``[names]`` in ``declarations/conda-names.toml`` (absent file: no overrides)."""
    standard_doc = json.loads(importlib.resources.files("whl2conda.api").joinpath("stdrename.json").read_text())
    standard = {k: v for k, v in standard_doc.items() if not k.startswith("$") and isinstance(v, str)}
    overrides: dict[str, str] = {}
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise CondaError(f"{path}: {e}") from e
        table = doc.get("names", {})
        if not isinstance(table, dict):
            raise CondaError(f"{path}: [names] must be a table of PyPI name = conda name")
        for key, value in table.items():
            if not isinstance(value, str) or not _CONDA_NAME.fullmatch(value):
                raise CondaError(f"{path}: [names] {key}: {value!r} is not a conda package name "
                                 f"(want {_CONDA_NAME.pattern})")
            overrides[canonicalize_name(key)] = value
    return NameMap(overrides, standard, path)


def validate_depends(depends: Iterable[str], where: str) -> list[str]:
    """Every dependency is ``name[ constraint]`` with a conda name: the names, in order.

    A dependency that is no plain conda name is refused before anything is packed: it could
    otherwise escape ``noarch/`` or forge a repodata key.
    """
    out = []
    for dep in depends:
        name, _, spec = dep.partition(" ")
        if not _CONDA_NAME.fullmatch(name) or (spec and not _CONDA_VERSION_SPEC.fullmatch(spec.strip())):
            raise CondaError(f"{where}: dependency {dep!r} is not a plain conda dependency")
        out.append(name)
    return out


def closed(requires: dict[str, list[str]]) -> tuple[set[str], dict[str, list[str]]]:
    """The packages whose dependencies are all packages of the channel (or python), to a fixed point,
    and for each package left out, what it lacks (a project with only platform wheels has no
    ``noarch`` package, so neither does what depends on it)."""
    kept, left_out = set(requires), {}
    changed = True
    while changed:
        changed = False
        for name in sorted(kept):
            missing = sorted({d for d in requires[name] if d != "python" and d not in kept})
            if missing:
                kept.discard(name)
                left_out[name] = missing
                changed = True
    return kept, left_out


@dataclass(frozen=True)
class ChannelWheel:
    project: str
    version: str
    filename: str
    path: Path
    sha256: str = ""  # the wheel's store digest: with a store, the package is cached by it


@dataclass(frozen=True)
class CondaPackage:
    project: str           # the PyPI project
    name: str              # the conda package name
    filename: str          # noarch/<filename>
    data: bytes
    depends: tuple[str, ...]


def _is_pure(filename: str) -> bool:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise CondaError(f"{filename!r}: a wheel file name may not name a path")
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename as e:
        raise CondaError(f"{filename!r}: {e}") from e
    return all(t.platform == "any" and t.abi == "none" for t in tags)


def _normalise_tree(root: Path) -> list[str]:
    """Fixed mtimes and modes; the files to pack, sorted (info/ last is cph's own split)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                raise CondaError(f"{p.relative_to(root)}: symbolic links are not packed")
            executable = p.stat().st_mode & stat.S_IXUSR
            p.chmod(0o755 if executable else 0o644)
            os.utime(p, (EPOCH, EPOCH))
            files.append(p.relative_to(root).as_posix())
    return sorted(files)


def _fix_zip_times(path: Path) -> None:
    """Reset every zip entry's time to EPOCH (``zipfile`` stamps entries with the clock)."""
    import time

    when = time.gmtime(EPOCH)[:6]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=when)
            fixed.compress_type = zipfile.ZIP_STORED
            fixed.external_attr = 0o644 << 16
            with src.open(info) as r, dst.open(fixed, "w", force_zip64=True) as w:
                shutil.copyfileobj(r, w, 1 << 20)
    os.replace(tmp, path)


def _dependency_names(path: Path) -> set[str]:
    """The project names in a wheel's ``Requires-Dist`` (core metadata), as written."""
    from packaging.metadata import Metadata

    with zipfile.ZipFile(path) as zf:
        metadata = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(metadata) != 1:
            raise CondaError(f"{path.name}: expected one .dist-info/METADATA, found {len(metadata)}")
        text = zf.read(metadata[0]).decode("utf-8")
    return {r.name for r in Metadata.from_email(text, validate=False).requires_dist or []}


class ConverterRefused(CondaError):
    """whl2conda cannot convert this wheel (e.g. a Metadata-Version it does not read): the wheel is left
    out of the channel, said in the log; the snapshot goes on."""


def convert(wheel: ChannelWheel, names: NameMap, work: Path) -> CondaPackage:
    """One pure wheel → one reproducible ``noarch: python`` ``.conda`` (whl2conda + conda-package-handling)."""
    from conda_package_handling.conda_fmt import CondaFormat_v2
    from wheel.wheelfile import WheelError
    from whl2conda.api.converter import DependencyRename, Wheel2CondaConverter, Wheel2CondaError
    from whl2conda.impl.pyproject import CondaPackageFormat

    if not _is_pure(wheel.filename):
        raise CondaError(f"{wheel.filename}: not a pure wheel; only noarch packages are made")
    name = names.conda_name(wheel.project)
    out = work / "tree"
    out.mkdir(parents=True)
    named = work / wheel.filename  # whl2conda reads the tags from the file name
    shutil.copyfile(wheel.path, named)
    converter = Wheel2CondaConverter(named, out)
    converter.std_renames = dict(names.standard)  # the packaged table, never a per-user cache
    # Each dependency by the name its wheel writes (``MarkupSafe``), so mixed-case and overridden names
    # both become the channel's lower-case conda names.
    written = {n: names.conda_name(n) for n in _dependency_names(wheel.path)}
    converter.dependency_rename = [DependencyRename.from_strings(re.escape(k), v) for k, v in
                                   sorted(written.items()) if k != v]
    converter.package_name = name
    converter.out_format = CondaPackageFormat.TREE
    converter.build_number = 0
    # whl2conda warns of each requirement a noarch package cannot state (an environment marker, a
    # version spec conda's syntax lacks) and leaves it out: the documented behaviour of the channel
    # (docs/formats.md); each package's index.json `depends` says what it does require.
    converter.logger = logging.getLogger("wheelproof.conda")
    converter.logger.setLevel(logging.ERROR)
    try:
        tree = converter.convert()
    except (Wheel2CondaError, WheelError, ValueError, OSError) as e:
        raise ConverterRefused(f"{wheel.filename}: whl2conda: {e}") from e
    tree = out / tree.name
    index_path = tree / "info" / "index.json"
    index = json.loads(index_path.read_text())
    index["timestamp"] = EPOCH * 1000
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True))
    files = _normalise_tree(tree)
    filename = f"{name}-{index['version']}-{index['build']}.conda"
    packed = work / filename
    CondaFormat_v2.create(str(tree), files, filename, str(work), compression_level=_ZSTD_LEVEL,
                          compression_threads=1)
    _fix_zip_times(packed)
    return CondaPackage(wheel.project, name, filename, packed.read_bytes(), tuple(index["depends"]))


def _repodata(noarch: dict[str, bytes]) -> dict[str, bytes]:
    """py-rattler's indexer over a scratch channel holding ``noarch/``: repodata.json and .zst."""
    from rattler.index import index_fs

    with tempfile.TemporaryDirectory(prefix="wheelproof-channel-") as tmp:
        sub = Path(tmp) / "noarch"
        sub.mkdir()
        for filename, data in noarch.items():
            (sub / filename).write_bytes(data)
        asyncio.run(index_fs(Path(tmp), write_zst=True, write_shards=False, force=True, max_parallel=2))
        for name in ("repodata.json", "repodata.json.zst"):
            if not (sub / name).is_file():
                raise CondaError(f"the indexer wrote no noarch/{name}")
        doc = json.loads((sub / "repodata.json").read_bytes())
    # the indexer stamps each record with the clock: pin it, as every other timestamp here
    for group in ("packages", "packages.conda"):
        for record in doc.get(group, {}).values():
            if "indexed_timestamp" in record:
                record["indexed_timestamp"] = EPOCH * 1000
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return {"repodata.json": data, "repodata.json.zst": zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)}


def _converter_key(wheel: ChannelWheel, name: str, names: NameMap) -> str:
    """What a package depends on: the wheel's bytes, the names and every tool and setting that packs it."""
    return key_of("conda-package", RECIPE, wheel.sha256, wheel.filename, wheel.project, name,
                  sorted(names.overrides.items()),
                  importlib.metadata.version("whl2conda"), importlib.metadata.version("conda-package-handling"),
                  _ZSTD_LEVEL, EPOCH)


def _cached_package(store: Store, wheel: ChannelWheel, names: NameMap, work: Path) -> tuple[CondaPackage, str]:
    """The wheel's package (its data left empty) and its store digest, converted once per key."""
    cache = DerivedCache(store, "conda-packages")
    name = names.conda_name(wheel.project)
    key = _converter_key(wheel, name, names)
    doc = cache.get(key)
    if doc is not None and isinstance(doc.get("package"), str) and store.has(doc["package"]):
        return CondaPackage(wheel.project, doc["name"], doc["filename"], b"", tuple(doc["depends"])), doc["package"]
    pkg = convert(ChannelWheel(wheel.project, wheel.version, wheel.filename, store.verified_path(wheel.sha256),
                               wheel.sha256), names, work)
    digest = store.put_bytes(pkg.data)
    cache.put(key, {"name": pkg.name, "filename": pkg.filename, "depends": list(pkg.depends), "package": digest,
                    "references": [digest]})
    return CondaPackage(pkg.project, pkg.name, pkg.filename, b"", pkg.depends), digest


def _cached_repodata(store: Store, packages: dict[str, str]) -> dict[str, bytes]:
    """:func:`_repodata` of the packages (filename → store digest), computed once per set of packages."""
    cache = DerivedCache(store, "conda-repodata")
    key = key_of("conda-repodata", sorted(packages.items()), importlib.metadata.version("py-rattler"),
                 _ZSTD_LEVEL, EPOCH)
    doc = cache.get(key)
    files = ("repodata.json", "repodata.json.zst")
    if doc is not None and all(isinstance(doc.get(f), str) and store.has(doc[f]) for f in files):
        return {f: store.read_bytes(doc[f]) for f in files}
    out = _repodata({f: store.read_bytes(d) for f, d in packages.items()})
    digests = {f: store.put_bytes(out[f]) for f in files}
    cache.put(key, {**digests, "references": sorted(digests.values())})
    return out


def channel(wheels: list[ChannelWheel], names: NameMap | None = None,
            log: Callable[[str], None] = lambda m: None, store: Store | None = None) -> Tree:
    """The ``conda/`` subtree: ``noarch/<pkg>.conda`` for every pure wheel, repodata.json(.zst).

    A name that is not a conda name is refused before anything is packed (it could otherwise escape
    ``noarch/`` or forge a repodata key); a package whose dependencies are not all in the channel
    (they have only platform wheels) is left out, and the log says why.

    With a ``store`` (and each wheel's ``sha256``), a wheel is converted once per content, converter
    version and name mapping: the package is kept in the store, its import in the DAG too
    (:class:`~pipeline.export.fileimports.FileImports`), and the repodata once per set of packages.
    """
    names = names or load_names()
    pure = [w for w in sorted(wheels, key=lambda w: w.filename) if _is_pure(w.filename)]
    requires: dict[str, list[str]] = {}
    package_of: dict[str, str] = {}
    noarch: Tree = {}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="wheelproof-conda-") as tmp:
        for i, w in enumerate(pure):
            try:
                if store is not None:
                    if not w.sha256:
                        raise CondaError(f"{w.filename}: no store digest to cache its conda package by")
                    pkg, digest = _cached_package(store, w, names, Path(tmp) / str(i))
                else:
                    pkg, digest = convert(w, names, Path(tmp) / str(i)), ""
            except ConverterRefused as e:
                log(f"conda: {w.filename} left out of the channel: {e.__cause__ or e}")
                continue
            requires[pkg.name] = validate_depends(pkg.depends, f"{w.filename} (conda package {pkg.name})")
            if pkg.filename in noarch:
                raise CondaError(f"{w.filename}: two wheels make the conda package {pkg.filename}")
            noarch[pkg.filename] = pkg.data
            digests[pkg.filename] = digest
            package_of[pkg.filename] = pkg.name
    kept, left_out = closed(requires)
    for name, missing in sorted(left_out.items()):
        log(f"conda: {name} left out of the channel: it needs {', '.join(missing)}, which has no noarch package")
    noarch = {f: v for f, v in noarch.items() if package_of[f] in kept}
    digests = {f: d for f, d in digests.items() if package_of[f] in kept}
    if store is not None:
        imports = FileImports(store, V1_2025)
        noarch = {f: imports.entry(d) for f, d in digests.items()}
        repodata = _cached_repodata(store, digests)
    else:
        repodata = _repodata({f: v for f, v in noarch.items() if isinstance(v, bytes)})
    log(f"conda: {len(noarch)} noarch packages of {len(wheels)} wheels ({len(pure)} pure, "
        f"{len(pure) - len(noarch)} left out)")
    subdir: Tree = {**noarch, **repodata}
    return {"noarch": subdir}
