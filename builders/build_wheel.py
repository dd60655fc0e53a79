"""Build one wheel from one sdist; runs *inside* the sandbox, offline.

Everything it uses is handed in read-only under /inputs by the pipeline:

    /inputs/sdist/<sdist>        the fixed-output source archive
    /inputs/wheels/*.whl         the pinned closure of the build requirements
    /inputs/tools/*.whl          build, pyproject-hooks, packaging (the frontend)

Phase ``prepare`` makes an isolated environment from the input wheels alone
(no pip, no index) at /env, the frontend at /tools, and extracts the sdist.
Phases ``requires`` and ``wheel`` then run with /env and /tools read-only and
only the source tree and /out writable, driving the backend through
``build``'s ProjectBuilder (a thin layer over pyproject-hooks). Each phase
writes /out/<phase>.json and exits non-zero on failure; the log is what it prints.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import sys
import sysconfig
import tarfile
import time
import tomllib
import venv
import zipfile
from pathlib import Path


def install_wheel(wheel: Path, site: Path, scripts: Path, python: str = "/usr/bin/python3") -> None:
    """Unpack a wheel into an environment (PEP 427: purelib/platlib into site, scripts into bin)."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if ".." in parts or info.filename.startswith("/"):
                raise SystemExit(f"unsafe member {info.filename!r} in {wheel.name}")
            if parts[0].endswith(".data") and len(parts) > 2:
                scheme, rest = parts[1], parts[2:]
                if scheme in ("purelib", "platlib"):
                    dest = site.joinpath(*rest)
                elif scheme == "scripts":
                    dest = scripts.joinpath(*rest)
                else:
                    continue  # headers and data are not needed to run a backend
            else:
                dest = site.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            if info.external_attr >> 16 & 0o111:
                dest.chmod(0o755)
        entry_points = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/entry_points.txt")]
        for name in entry_points:
            write_scripts(zf.read(name).decode(), scripts, python)


def write_scripts(entry_points: str, scripts: Path, python: str) -> None:
    """Console and GUI scripts for an entry_points.txt (the entry points specification)."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(entry_points)
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for script, target in parser.items(section):
            module, _, attr = target.partition(":")
            attr = attr.split("[")[0].strip()
            scripts.mkdir(parents=True, exist_ok=True)
            path = scripts / script.strip()
            path.write_text(f"#!{python}\nimport sys\nfrom {module.strip()} import {attr.split('.')[0]}\n"
                            f"sys.exit({attr}())\n")
            path.chmod(0o755)


class IsolatedEnv:
    """A venv holding only the given wheels (cf. build.env.DefaultIsolatedEnv, without an installer)."""

    def __init__(self, path: Path):
        paths = sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})
        self.path = path
        self.python = str(path / "bin" / "python")
        self.site = Path(paths["purelib"])
        self.scripts = Path(paths["scripts"])

    @classmethod
    def create(cls, path: Path, wheels: list[Path]) -> IsolatedEnv:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(path)
        env = cls(path)
        for wheel in sorted(wheels):
            install_wheel(wheel, env.site, env.scripts, env.python)
        return env

    def missing(self, requirements: set[str]) -> list[str]:
        """Requirements the environment does not satisfy (markers evaluated for this interpreter)."""
        from importlib.metadata import distributions

        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        have = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions(path=[str(self.site)])}
        out = []
        for text in sorted(requirements):
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            version = have.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                out.append(text)
        return out


MAX_EXTRACT = 2 << 30
MAX_RATIO = 200
RATIO_FLOOR = 16 << 20  # small archives may compress well


def _within(total: int, archive_size: int, max_bytes: int, max_ratio: int, name: str) -> None:
    if total > max_bytes:
        raise SystemExit(f"wheelproof: {name} unpacks to over {max_bytes} bytes (the extracted limit)")
    if total > RATIO_FLOOR and total > max_ratio * archive_size:
        raise SystemExit(f"wheelproof: {name} unpacks to over {max_ratio} times its size (a decompression bomb?)")


def keep_modes_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, but keeping the archive's permission bits (group write included):
    the modes upstream's checkout had, which a setuptools wheel records (condition ``modes = "sdist"``).
    Set-id and sticky bits still go; the owner keeps read and write."""
    filtered = tarfile.data_filter(member, path)
    if filtered is None or not (member.isreg() or member.isdir()):
        return filtered
    floor = 0o700 if member.isdir() else 0o600
    return filtered.replace(mode=(member.mode & 0o777) | floor, deep=False)


def extract_sdist(sdist: Path, dest: Path, max_bytes: int = MAX_EXTRACT, max_ratio: int = MAX_RATIO,
                  keep_modes: bool = False) -> Path:
    """Unpack one sdist, stopping before the unpacked size passes ``max_bytes`` or ``max_ratio``."""
    dest.mkdir(parents=True, exist_ok=True)
    size = sdist.stat().st_size
    total = 0
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as zf:
            for info in zf.infolist():  # zipfile stops each member at its declared size
                total += info.file_size
                _within(total, size, max_bytes, max_ratio, sdist.name)
            zf.extractall(dest)
    else:
        with tarfile.open(sdist) as tf:
            for member in tf:  # checked from its header before its data is read
                total += max(member.size, 0)
                _within(total, size, max_bytes, max_ratio, sdist.name)
                tf.extract(member, dest, filter=keep_modes_filter if keep_modes else "data")
    entries = [p for p in dest.iterdir()]
    if len(entries) != 1 or not entries[0].is_dir():
        raise SystemExit(f"sdist {sdist.name} does not hold exactly one top-level directory")
    return entries[0]


def stamp_checkout(srcdir: Path, when: int) -> None:
    """Every file and directory of the source tree at one mtime, as a fresh ``git clone`` leaves them
    (condition ``timestamps = "checkout"``: upstream built its wheel from another clone than its sdist)."""
    for path in [srcdir, *srcdir.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


HOST_HOOK = Path(__file__).resolve().parent / "build_host"  # its sitecustomize.py reproduces upstream's host


def freeze_clock(clock: int, faketime: str | None, scratch: Path, written: dict[str, int] | None = None) -> None:
    """Run the backend (a child process) at a frozen clock, as upstream's build ran at its time.

    libfaketime freezes what every process reads from the clock. The kernel, not libc, stamps the files
    a process writes, so the start-up hook (builders/build_host/sitecustomize.py) makes ``os.stat``
    report the frozen time for files written from now on (or, for a file named in ``written``, the
    moment upstream's build wrote it); files from the sdist keep theirs.
    """
    if not faketime:
        raise SystemExit("wheelproof: --clock needs --faketime (the libfaketime library)")
    marker = scratch / ".clock-start"
    marker.write_bytes(b"")
    since = os.stat(marker).st_mtime_ns  # the kernel's clock: what files written from now on carry
    marker.unlink()
    os.environ.update({
        "LD_PRELOAD": faketime, "FAKETIME_FMT": "%s", "FAKETIME": str(clock),
        "WHEELPROOF_CLOCK": str(clock), "WHEELPROOF_CLOCK_SINCE": str(since),
        "WHEELPROOF_WRITTEN": json.dumps(written or {}, sort_keys=True),
        "PYTHONPATH": str(HOST_HOOK),
    })
    print(f"wheelproof: backend clock frozen at {clock} ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(clock))})",
          flush=True)


def emulate_host(host: str | None) -> None:
    """Run the backend as on upstream's build host, through the same start-up hook: on ``windows``,
    text-mode writes end lines with CRLF, zip members record host system 0 and ``os.stat`` reports
    the modes Windows reports."""
    if host is not None:
        os.environ.update({"WHEELPROOF_HOST": host, "PYTHONPATH": str(HOST_HOOK)})
        print(f"wheelproof: backend runs as on a {host} host", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["prepare", "requires", "wheel"])
    ap.add_argument("--inputs", default="/inputs")
    ap.add_argument("--env", default="/env")
    ap.add_argument("--tools", default="/tools")
    ap.add_argument("--extract", default="/extract", help="prepare: where the sdist is unpacked")
    ap.add_argument("--srcdir", help="requires/wheel: the unpacked source tree")
    ap.add_argument("--out", default="/out")
    ap.add_argument("--umask", type=lambda s: int(s, 8), default=0o022)
    ap.add_argument("--config-settings", type=json.loads, default=None,
                    help="requires/wheel: PEP 517 config_settings, as a JSON object")
    ap.add_argument("--max-extract", type=int, default=MAX_EXTRACT, help="prepare: bytes the sdist may unpack to")
    ap.add_argument("--max-ratio", type=int, default=MAX_RATIO, help="prepare: unpacked/archive size ratio")
    ap.add_argument("--keep-modes", action="store_true", help="prepare: keep the sdist's permission bits")
    ap.add_argument("--checkout-time", type=int, help="prepare: give every source file this mtime (a fresh clone's)")
    ap.add_argument("--clock", type=int, help="wheel/requires: freeze the backend's clock at this epoch second")
    ap.add_argument("--faketime", help="with --clock: the libfaketime library to preload")
    ap.add_argument("--written", type=json.loads, default=None,
                    help="with --clock: {file name: epoch second} for files upstream's build wrote before its clock")
    ap.add_argument("--host", choices=["windows"], help="wheel/requires: run the backend as on this host")
    args = ap.parse_args(argv)
    os.umask(args.umask)
    started = time.monotonic()
    inputs, env_dir, tools, out = Path(args.inputs), Path(args.env), Path(args.tools), Path(args.out)
    result: dict[str, object] = {"phase": args.phase}

    if args.phase == "prepare":
        # Phase 1 (env, tools and extract writable): lay out everything the build reads.
        for wheel in sorted((inputs / "tools").glob("*.whl")):
            install_wheel(wheel, tools, tools / "bin")
        env = IsolatedEnv.create(env_dir, sorted((inputs / "wheels").glob("*.whl")))
        (sdist,) = sorted((inputs / "sdist").iterdir())
        srcdir = extract_sdist(sdist, Path(args.extract), args.max_extract, args.max_ratio, args.keep_modes)
        if args.checkout_time is not None:
            stamp_checkout(srcdir, args.checkout_time)
        result["top"] = srcdir.name
        print(f"wheelproof: prepared {sdist.name}: {len(list(env.site.iterdir()))} entries in the build env",
              flush=True)
    else:
        # Phase 2 (env and tools read-only; only the source tree and out writable): run the backend.
        sys.path.insert(0, str(tools))
        from build import ProjectBuilder  # the pinned frontend, not the host's

        env = IsolatedEnv(env_dir)
        if args.clock is not None:
            freeze_clock(args.clock, args.faketime, out, args.written)
        emulate_host(args.host)
        os.environ["PATH"] = f"{env.scripts}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        srcdir = Path(args.srcdir)
        builder = ProjectBuilder(srcdir, python_executable=env.python)
        pyproject = srcdir / "pyproject.toml"
        declared = tomllib.loads(pyproject.read_text()).get("build-system", {}) if pyproject.is_file() else {}
        result["build_system"] = sorted(builder.build_system_requires)
        result["backend"] = declared.get("build-backend", "setuptools.build_meta:__legacy__")
        result["backend_path"] = declared.get("backend-path", [])
        result["missing_static"] = env.missing(set(builder.build_system_requires))
        if args.phase == "requires":
            dynamic = set(builder.get_requires_for_build("wheel", args.config_settings))
            result["dynamic"] = sorted(dynamic)
            result["missing_dynamic"] = env.missing(dynamic)
        else:
            if result["missing_static"]:
                print(f"wheelproof: build inputs do not satisfy {result['missing_static']}", flush=True)
            wheel = builder.build("wheel", out, config_settings=args.config_settings)
            result["wheel"] = Path(wheel).name
    result["seconds"] = round(time.monotonic() - started, 3)
    (out / f"{args.phase}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
