"""Which files an interpreter can import: the directories verify-env checks.

Asked of the interpreter itself, run with ``-I -S`` (isolated, no ``site``: no ``.pth`` file of the
environment runs while we look at it), through :mod:`sysconfig` (the install scheme of
https://docs.python.org/3/library/sysconfig.html). Checked: ``purelib`` and ``platlib`` (the
environment's site-packages), every directory a ``.pth`` file in them adds (``site``'s rules, read
here, never executed), the system site-packages when ``pyvenv.cfg`` says
``include-system-site-packages = true`` (PEP 405), the user site-packages when the interpreter is not a
virtual environment, and the ``scripts`` directory (console scripts). Out of scope: the standard library
(``stdlib``, ``platstdlib``, under ``base_prefix``), ``PYTHONPATH`` (an invocation's choice, not the
environment's), and the environment's own files in ``scripts`` (``python*`` and the ``activate*``
scripts ``venv`` writes), which are not on ``sys.path``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.model.errors import WheelproofError

__all__ = ["ENV_OWN_SCRIPTS", "Layout", "LayoutError", "probe"]

# Files ``python -m venv`` / ``uv venv`` put in bin/: not reachable from sys.path, not checked.
ENV_OWN_SCRIPTS = ("python", "python3", "python3.*", "pypy*", "activate", "activate.*", "Activate.ps1",
                   "activate_this.py", "deactivate.bat", "pydoc.bat")

_PROBE = r"""
import json, os, site, sys, sysconfig
# PEP 405, as site.venv() applies it (which -S skips): pyvenv.cfg beside the executable or one up
exe_dir = os.path.dirname(os.path.abspath(sys.executable))
prefix, cfg = sys.prefix, {}
for d in (exe_dir, os.path.dirname(exe_dir)):
    path = os.path.join(d, "pyvenv.cfg")
    if os.path.isfile(path):
        for line in open(path, encoding="utf-8"):
            k, sep, v = line.partition("=")
            if sep:
                cfg[k.strip().lower()] = v.strip()
        prefix = os.path.dirname(exe_dir)
        break
venv = bool(cfg) and prefix != sys.base_prefix
p = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
print(json.dumps({"executable": sys.executable, "prefix": prefix, "base_prefix": sys.base_prefix,
                  "version": "%d.%d" % sys.version_info[:2], "cache_tag": sys.implementation.cache_tag,
                  "purelib": p["purelib"], "platlib": p["platlib"], "scripts": p["scripts"], "data": p["data"],
                  "include": p["include"], "stdlib": p["stdlib"], "platstdlib": p["platstdlib"], "venv": venv,
                  "system_site": cfg.get("include-system-site-packages", "false").lower() == "true",
                  "base_site": sorted({base["purelib"], base["platlib"]}),
                  "user_site": site.getusersitepackages()}))
"""


class LayoutError(WheelproofError):
    pass


@dataclass(frozen=True)
class Layout:
    """An environment's directories (as the interpreter names them) and where they are on this host.

    ``host_prefix`` differs from ``prefix`` only while ``install`` works on a staging copy.
    """

    python: Path
    prefix: Path
    base_prefix: Path
    version: str
    cache_tag: str
    site_dirs: tuple[Path, ...]
    scripts: Path
    data: Path
    include: Path
    system_site: bool
    extra_site: tuple[Path, ...]  # system site-packages (venv with system site) or the user site
    host_prefix: Path

    def host(self, path: Path) -> Path:
        """Where ``path`` (an environment path) is on this host."""
        if self.host_prefix == self.prefix or not path.is_relative_to(self.prefix):
            return path
        return self.host_prefix / path.relative_to(self.prefix)

    def env_path(self, host: Path) -> Path:
        if self.host_prefix == self.prefix or not host.is_relative_to(self.host_prefix):
            return host
        return self.prefix / host.relative_to(self.host_prefix)

    def subject(self, path: Path) -> str:
        """How findings and exceptions name a path: relative to the prefix, else absolute."""
        return path.relative_to(self.prefix).as_posix() if path.is_relative_to(self.prefix) else path.as_posix()

    def staged(self, host_prefix: Path) -> Layout:
        return Layout(**{**self.__dict__, "host_prefix": host_prefix})


def probe(python: Path) -> Layout:
    """Ask ``python`` (run isolated, without site) for its scheme."""
    if not python.exists():
        raise LayoutError(f"{python}: no such interpreter")
    proc = subprocess.run([str(python), "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LayoutError(f"{python}: could not ask it for its paths: {proc.stderr.strip()[-400:]}")
    try:
        d = json.loads(proc.stdout)
    except ValueError as e:
        raise LayoutError(f"{python}: unreadable answer to the layout probe ({e})") from e
    prefix = Path(d["prefix"])
    sites = tuple(dict.fromkeys(Path(d[k]) for k in ("purelib", "platlib")))
    extra: list[Path] = []
    if d["venv"] and d["system_site"]:
        extra += [Path(p) for p in d["base_site"]]
    if not d["venv"]:
        extra.append(Path(d["user_site"]))
    extra = [p for p in dict.fromkeys(extra) if p not in sites and p.is_dir()]
    return Layout(python=python, prefix=prefix, base_prefix=Path(d["base_prefix"]), version=d["version"],
                  cache_tag=d["cache_tag"], site_dirs=sites, scripts=Path(d["scripts"]), data=Path(d["data"]),
                  include=Path(d["include"]), system_site=bool(d["system_site"]), extra_site=tuple(extra),
                  host_prefix=prefix)
