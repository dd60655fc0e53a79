"""verify-env: every file an interpreter can import is the file the snapshot's wheel put there.

Sources of truth: the snapshot's wheels (read through :mod:`pipeline.client.source`, every block
verified) and their RECORDs (PEP 376 / PEP 627 / the wheel spec, PEP 427 and
https://packaging.python.org/en/latest/specifications/recording-installed-packages/). The installed
distributions are found from their ``.dist-info`` directories (PEP 376); the installed RECORDs are only
used to say which files a distribution *claims* (they are written by the installer, so they prove
nothing) and are checked for paths that leave the environment.

Findings (``KINDS`` in :mod:`pipeline.client.allow`): ``modified`` (hash or size differs from the wheel's
RECORD), ``missing``, ``unknown`` (no snapshot wheel put it there), ``distribution`` (installed but not
in the snapshot; lists the files it claims), ``pth-exec`` (a ``.pth`` line ``site`` would execute,
unless the snapshot's wheel ships that very file), ``pth-path`` (a ``.pth`` adds a directory outside
the environment), ``bad-record`` (an installed RECORD line with an absolute path or one that leaves the
environment), ``system-site`` (directories outside the environment are reachable). Which directories
are checked: :mod:`pipeline.client.layout`. Byte-code caches are checked by compiling the verified
source with the environment's interpreter and comparing code objects; generated console scripts by
comparing their syntax tree with the launchers pip/installer and uv write.
"""

from __future__ import annotations

import ast
import base64
import email.parser
import fnmatch
import hashlib
import io
import json
import os
import posixpath
import re
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from installer.records import InvalidRecordEntry, RecordEntry, parse_record_file
from installer.scripts import Script
from installer.utils import parse_entrypoints
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from pipeline.client.allow import Allowlist
from pipeline.client.layout import ENV_OWN_SCRIPTS, Layout
from pipeline.client.source import SnapshotError, SnapshotView, SnapshotWheel

__all__ = ["Expected", "Finding", "Installed", "Report", "installed_distributions", "verify_env",
           "wheel_expectations"]

INSTALLER_METADATA = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json", "uv_cache.json", "uv_build.json")
_PYC = re.compile(r"^(?P<stem>[^.]+)\.(?P<tag>[^.]+)(?:\.opt-(?P<opt>[12]))?\.pyc$")
_UV_LAUNCHER = '''import sys
from {module} import {import_name}
if __name__ == "__main__":
    if sys.argv[0].endswith("-script.pyw"):
        sys.argv[0] = sys.argv[0][:-11]
    elif sys.argv[0].endswith(".exe"):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit({call}())
'''
_PIP_LAUNCHER = '''import sys
from {module} import {import_name}
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit({call}())
'''
_PYC_CHECK = r"""
import importlib.util, json, marshal, sys
out = []
for pyc, src, opt in json.load(sys.stdin):
    data, source = open(pyc, "rb").read(), open(src, "rb").read()
    if data[:4] != importlib.util.MAGIC_NUMBER:
        out.append([pyc, "its magic number is not this interpreter's"]); continue
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1 and data[8:16] != importlib.util.source_hash(source):
        out.append([pyc, "its source hash is not the source's"]); continue
    if not flags & 1 and int.from_bytes(data[12:16], "little") != len(source) & 0xFFFFFFFF:
        out.append([pyc, "its source size is not the source's"]); continue
    try:
        code = marshal.loads(data[16:])
    except Exception as e:
        out.append([pyc, "unreadable byte code: %s" % e]); continue
    if code != compile(source, src, "exec", dont_inherit=True, optimize=opt):
        out.append([pyc, "its code is not the compiled source"])
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    detail: str
    allowed_by: str | None = None


@dataclass(frozen=True)
class Expected:
    """One file a snapshot wheel puts into the environment (an environment path)."""

    path: Path
    owner: str
    how: str  # "file" (RECORD hash), "script" (shebang rewritten), "launcher" (generated), "metadata"
    sha256: str | None = None
    size: int | None = None
    body: bytes = b""  # script: the wheel's bytes; launcher: "module:attr"


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    dist_info: Path  # environment path
    tags: frozenset[str]
    claims: tuple[Path, ...]


@dataclass
class Report:
    python: str
    snapshot: str
    distributions: list[str] = field(default_factory=list)
    files_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.allowed_by is None]

    def text(self) -> str:
        lines = [f"{f.kind:13} {f.subject}: {f.detail}" + (f"  [allowed: {f.allowed_by}]" if f.allowed_by else "")
                 for f in self.findings]
        excepted = len(self.findings) - len(self.failing)
        verdict = "ok" if not self.failing else "FAILED"
        lines.append(f"verify-env: {verdict}: {len(self.distributions)} distributions from {self.snapshot}, "
                     f"{self.files_checked} files checked; {len(self.failing)} findings"
                     + (f" ({excepted} more excepted)" if excepted else ""))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"python": self.python, "snapshot": self.snapshot, "ok": not self.failing,
                           "distributions": self.distributions, "files_checked": self.files_checked,
                           "findings": [asdict(f) for f in self.findings]}, indent=1)


def _b64_to_hex(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _record_entries(text: str, where: str) -> Iterator[tuple[int, RecordEntry | str]]:
    """(line, entry) for each RECORD row; a str instead of an entry says what is wrong with the row."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            (elements,) = list(parse_record_file([line]))
            entry = RecordEntry.from_elements(*elements)
        except (InvalidRecordEntry, ValueError) as e:
            yield number, f"{where}:{number}: unparsable RECORD row ({e})"
            continue
        yield number, entry


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def installed_distributions(layout: Layout, findings: list[Finding]) -> list[Installed]:
    """Every ``.dist-info`` in the site directories (``.egg-info``/``.egg-link`` are reported as foreign)."""
    out = []
    for site in layout.site_dirs:
        host_site = layout.host(site)
        if not host_site.is_dir():
            continue
        for entry in sorted(host_site.iterdir()):
            if entry.name.endswith((".egg-info", ".egg-link")):
                findings.append(Finding("distribution", f"dist:{entry.name}",
                                        "a legacy (egg) installation: not from the snapshot"))
                continue
            if not entry.name.endswith(".dist-info") or not entry.is_dir():
                continue
            env_dir = site / entry.name
            meta_path = entry / "METADATA"
            if not meta_path.is_file():
                findings.append(Finding("distribution", layout.subject(env_dir), "no METADATA: not a distribution "
                                        "any snapshot wheel installs"))
                continue
            meta = email.parser.BytesHeaderParser().parsebytes(meta_path.read_bytes())
            name, version = canonicalize_name(meta.get("Name", "")), meta.get("Version", "")
            tags: set[str] = set()
            wheel_file = entry / "WHEEL"
            if wheel_file.is_file():
                for value in email.parser.BytesHeaderParser().parsebytes(wheel_file.read_bytes()).get_all("Tag", []):
                    tags |= {str(t) for t in parse_tag(value.strip())}
            claims = []
            record = entry / "RECORD"
            where = layout.subject(env_dir / "RECORD")
            text = record.read_text(encoding="utf-8", errors="replace") if record.is_file() else ""
            for number, item in _record_entries(text, where):
                if isinstance(item, str):
                    findings.append(Finding("bad-record", f"{where}:{number}", item))
                    continue
                if item.path.startswith("/") or re.match(r"^[A-Za-z]:", item.path):
                    findings.append(Finding("bad-record", f"{where}:{number}",
                                            f"absolute path {item.path!r}: RECORD paths are relative (PEP 376)"))
                    continue
                target = Path(os.path.normpath(site / item.path))
                if not _inside(target, layout.prefix):
                    findings.append(Finding("bad-record", f"{where}:{number}",
                                            f"path {item.path!r} leaves the environment (to {target})"))
                    continue
                claims.append(target)
            out.append(Installed(name, version, env_dir, frozenset(tags), tuple(claims)))
    return out


def _select_wheel(snapshot: SnapshotView, dist: Installed) -> tuple[SnapshotWheel | None, str]:
    wheels = snapshot.wheels(dist.name)
    same = [w for w in wheels if snapshot.version_of(w) == dist.version]
    if not same:
        have = sorted({snapshot.version_of(w) for w in wheels})
        return None, (f"{dist.name} {dist.version} is not in the snapshot"
                      + (f" (it has {', '.join(have)})" if have else ""))
    for w in same:
        if {str(t) for t in parse_wheel_filename(w.filename)[3]} == dist.tags:
            return w, ""
    if len(same) == 1 and not dist.tags:
        return same[0], ""
    return None, f"{dist.name} {dist.version}: no wheel in the snapshot has the installed tags {sorted(dist.tags)}"


def wheel_expectations(layout: Layout, wheel: SnapshotWheel, data: bytes) -> list[Expected]:
    """Where each file of ``wheel`` lands in ``layout`` and what it must hash to (PEP 427 schemes)."""
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info") and n.endswith("/RECORD")}
    if len(dist_infos) != 1:
        raise SnapshotError(f"{wheel.filename}: expected one .dist-info with a RECORD, found {sorted(dist_infos)}")
    (dist_info,) = dist_infos
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    wheel_meta = email.parser.BytesHeaderParser().parsebytes(zf.read(f"{dist_info}/WHEEL"))
    purelib, platlib = layout.site_dirs[0], layout.site_dirs[-1]
    root = purelib if wheel_meta.get("Root-Is-Purelib", "true").strip().lower() == "true" else platlib
    schemes = {"purelib": purelib, "platlib": platlib, "scripts": layout.scripts, "data": layout.data}
    owner = wheel.project
    out: list[Expected] = []
    record = zf.read(f"{dist_info}/RECORD").decode()
    for number, item in _record_entries(record, f"{wheel.filename}:{dist_info}/RECORD"):
        if isinstance(item, str):
            raise SnapshotError(item)
        path = item.path
        if path.startswith("/") or ".." in path.split("/"):
            raise SnapshotError(f"{wheel.filename}:{dist_info}/RECORD:{number}: path {path!r} is not allowed")
        if path in (f"{dist_info}/RECORD", f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s") or \
                "__pycache__" in path.split("/")[:-1]:
            continue
        sha = _b64_to_hex(item.hash_.value) if item.hash_ and item.hash_.name == "sha256" else None
        if sha is None:
            raise SnapshotError(f"{wheel.filename}:{dist_info}/RECORD:{number}: {path} has no sha256")
        if path.startswith(data_dir + "/"):
            scheme, _, rest = path[len(data_dir) + 1:].partition("/")
            if scheme == "headers":
                continue  # installed under include/: not reachable from sys.path
            if scheme not in schemes:
                raise SnapshotError(f"{wheel.filename}: {path}: unknown scheme {scheme!r}")
            target = Path(posixpath.normpath(str(schemes[scheme] / rest)))
            if scheme == "scripts":
                out.append(Expected(target, owner, "script", sha, item.size, zf.read(path)))
                continue
        else:
            target = root / path
        out.append(Expected(target, owner, "file", sha, item.size))
    for extra in INSTALLER_METADATA:
        out.append(Expected(root / dist_info / extra, owner, "metadata"))
    if f"{dist_info}/entry_points.txt" in names:
        for name, module, attr, section in parse_entrypoints(zf.read(f"{dist_info}/entry_points.txt").decode()):
            out.append(Expected(layout.scripts / name, owner, "launcher", body=f"{module}:{attr}:{section}".encode()))
    return out


def _shebang_ok(layout: Layout, line: bytes) -> bool:
    if not line.startswith(b"#!"):
        return False
    exe = Path(line[2:].strip().decode(errors="replace"))
    return exe.parent == layout.scripts and fnmatch.fnmatchcase(exe.name, "python*")


def _launcher_ok(layout: Layout, exp: Expected, data: bytes) -> str | None:
    first, _, body = data.partition(b"\n")
    if not _shebang_ok(layout, first):
        return f"its interpreter line {first[:80]!r} is not this environment's python"
    module, attr, section = exp.body.decode().split(":")
    try:
        tree = ast.dump(ast.parse(body))
    except SyntaxError as e:
        return f"not a Python launcher ({e})"
    shapes = []
    kind: Literal["console", "gui"] = "gui" if section == "gui" else "console"
    _, generated = Script(exp.path.name, module, attr, kind).generate(str(layout.scripts / "python"), "posix")
    shapes.append(generated.partition(b"\n")[2])
    import_name = attr.split(".")[0]
    shapes += [t.format(module=module, import_name=import_name, call=attr).encode()
               for t in (_UV_LAUNCHER, _PIP_LAUNCHER)]
    if any(ast.dump(ast.parse(s)) == tree for s in shapes):
        return None
    return f"it is not the launcher for {module}:{attr} that pip, installer or uv write"


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            yield Path(dirpath) / name


def _pth_lines(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        yield number, line


def verify_env(layout: Layout, snapshot: SnapshotView, allow: Allowlist | None = None) -> Report:
    """Check ``layout``'s reachable files against ``snapshot``; exceptions mark findings as allowed."""
    allow = allow or Allowlist()
    snapshot.wheels("")  # reads (and so verifies) the root and simple/ even for an empty environment
    findings: list[Finding] = []
    report = Report(str(layout.python), str(snapshot.root))
    expected: dict[Path, Expected] = {}
    claimed: dict[Path, str] = {}
    foreign: dict[str, tuple[Installed, str]] = {}
    for dist in installed_distributions(layout, findings):
        wheel, why = _select_wheel(snapshot, dist)
        if wheel is None:
            foreign[dist.name] = (dist, why)
            for p in dist.claims:
                claimed.setdefault(p, dist.name)
            continue
        report.distributions.append(f"{dist.name}=={dist.version}")
        for e in wheel_expectations(layout, wheel, snapshot.wheel_bytes(wheel)):
            expected[e.path] = e
    if layout.system_site or layout.extra_site:
        for d in layout.extra_site:
            findings.append(Finding("system-site", d.as_posix(), "reachable from sys.path but not part of this "
                                    "environment (include-system-site-packages or the user site): not checked"))
    # the reachable directories: site-packages, and what their .pth files add
    roots = list(layout.site_dirs)
    good: set[Path] = set()
    for site in layout.site_dirs:
        host_site = layout.host(site)
        if not host_site.is_dir():
            continue
        for pth in sorted(host_site.glob("*.pth")):
            env_pth = site / pth.name
            shipped = expected.get(env_pth)
            shipped_ok = shipped is not None and shipped.sha256 == hashlib.sha256(pth.read_bytes()).hexdigest()
            for number, line in _pth_lines(pth):
                if line.startswith(("import ", "import\t")):
                    if not shipped_ok:
                        findings.append(Finding("pth-exec", layout.subject(env_pth),
                                                f"line {number} runs code at every start-up: {line.strip()[:120]!r}"))
                    continue
                added = Path(os.path.normpath(site / line.rstrip()))
                if not layout.host(added).is_dir():
                    continue
                if _inside(added, layout.prefix):
                    if not any(_inside(added, r) for r in roots):
                        roots.append(added)
                else:
                    findings.append(Finding("pth-path", layout.subject(env_pth),
                                            f"line {number} puts {added} (outside the environment) on sys.path"))
    seen: set[Path] = set()
    pycs: list[tuple[Path, Path, int]] = []
    files: list[Path] = [layout.env_path(p) for r in roots if layout.host(r).is_dir() for p in _walk(layout.host(r))]
    host_scripts = layout.host(layout.scripts)
    if host_scripts.is_dir():
        files += [layout.scripts / p.name for p in sorted(host_scripts.iterdir())
                  if (p.is_file() or p.is_symlink())
                  and not any(fnmatch.fnmatchcase(p.name, g) for g in ENV_OWN_SCRIPTS)]
    for path in files:
        if path in seen:
            continue
        seen.add(path)
        report.files_checked += 1
        host = layout.host(path)
        exp = expected.get(path)
        if exp is None:
            m = _PYC.match(path.name)
            if m and path.parent.name == "__pycache__":
                source = path.parent.parent / f"{m['stem']}.py"
                if m["tag"] == layout.cache_tag and expected.get(source) is not None:
                    pycs.append((path, source, int(m["opt"] or 0)))
                    continue
            owner = claimed.get(path)
            if owner is None:
                findings.append(Finding("unknown", layout.subject(path), "no wheel of the snapshot puts it there"))
            continue
        if host.is_symlink():
            findings.append(Finding("modified", layout.subject(path), f"is a symbolic link to {os.readlink(host)}"))
            continue
        data = host.read_bytes()
        problem = None
        if exp.how == "file":
            if len(data) != exp.size or hashlib.sha256(data).hexdigest() != exp.sha256:
                problem = (f"sha256 {hashlib.sha256(data).hexdigest()[:16]}… ({len(data)} bytes), the snapshot's "
                           f"{exp.owner} wheel has {exp.sha256[:16] if exp.sha256 else '?'}… ({exp.size} bytes)")
        elif exp.how == "script":
            if exp.body.startswith(b"#!python"):
                first, _, rest = data.partition(b"\n")
                if not _shebang_ok(layout, first) or rest != exp.body.partition(b"\n")[2]:
                    problem = f"differs from the script in the snapshot's {exp.owner} wheel"
            elif data != exp.body:
                problem = f"differs from the script in the snapshot's {exp.owner} wheel"
        elif exp.how == "launcher":
            problem = _launcher_ok(layout, exp, data)
        if problem:
            findings.append(Finding("modified", layout.subject(path), problem))
        else:
            good.add(path)
    for want in expected.values():
        if want.how != "metadata" and want.path not in seen and not layout.host(want.path).exists():
            findings.append(Finding("missing", layout.subject(want.path), f"the snapshot's {want.owner} wheel has it"))
    findings += _check_pycs(layout, [(p, s, o) for p, s, o in pycs if s in good],
                            [p for p, s, _ in pycs if s not in good])
    for name, (dist, why) in sorted(foreign.items()):
        files_of = sorted(layout.subject(p) for p in dist.claims)
        findings.append(Finding("distribution", f"dist:{name}",
                                f"{why}; it claims {len(files_of)} files: {', '.join(files_of[:5])}"
                                + (" …" if len(files_of) > 5 else "")))
    for f in findings:
        a = allow.match(f.kind, f.subject)
        report.findings.append(Finding(f.kind, f.subject, f.detail, a.origin + f" ({a.reason})") if a else f)
    return report


def _check_pycs(layout: Layout, candidates: list[tuple[Path, Path, int]], orphans: list[Path]) -> list[Finding]:
    out = [Finding("unknown", layout.subject(p), "byte code of a source that failed verification") for p in orphans]
    if not candidates:
        return out
    payload = json.dumps([[str(layout.host(p)), str(layout.host(s)), o] for p, s, o in candidates])
    proc = subprocess.run([str(layout.python), "-I", "-S", "-c", _PYC_CHECK], input=payload, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        return out + [Finding("modified", layout.subject(p), f"could not check the byte code: {proc.stderr[-200:]}")
                      for p, _, _ in candidates]
    for host, why in json.loads(proc.stdout):
        out.append(Finding("modified", layout.subject(layout.env_path(Path(host))), why))
    return out
