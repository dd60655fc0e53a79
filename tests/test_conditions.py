"""Build conditions (issue 14): inferred from upstream's archives, declared with evidence, reproduced in
the sandbox without touching the output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.model.conditions import BuildConditions, parse_conditions, tz_string
from pipeline.model.declaration import load, path_for
from pipeline.model.derivation import Derivation
from pipeline.realise.rebuild import build, derivation, verdict_line
from pipeline.wheel.conditions import (
    SdistFile,
    WheelMember,
    infer_conditions,
    infer_from_archives,
    read_sdist_files,
    read_wheel_members,
    setuptools_modes,
)

from .conftest import declaration_text, needs_bwrap

MTIME_BACKEND = Path(__file__).with_name("mtimebackend.py")
CLOCK = 1793531978          # upstream's build ran at 2026-11-01T11:19:38Z
SOURCE_MTIMES = {"pkg_a.py": 1793500001.7, "pkg_b.py": 1793400000.2, "pkg_c.py": 1793000123.0}
PLUS_TWO = 120              # upstream's zone: UTC+02:00


def dt(seconds: float, offset: int = 0) -> tuple[int, int, int, int, int, int]:
    import time
    return time.gmtime(seconds + offset * 60)[:6]  # type: ignore[return-value]


# -- inference: pure logic over archive metadata ---------------------------------------------------

def setuptools_like(offset: int = 0, mode: int = 0o644) -> tuple[list[WheelMember], list[SdistFile]]:
    files = [SdistFile(f"src/{n}", t, mode, 10 + i) for i, (n, t) in enumerate(SOURCE_MTIMES.items())]
    members = [WheelMember(n, dt(t - t % 1 - int(t) % 2, offset), mode, 10 + i)
               for i, (n, t) in enumerate(SOURCE_MTIMES.items())]
    members += [WheelMember("x-1.dist-info/METADATA", dt(CLOCK, offset), 0o644, 99),
                WheelMember("x-1.dist-info/RECORD", dt(CLOCK, offset), 0o664, 0)]
    return members, files


def test_mtimes_from_the_sdist_and_a_build_clock_are_inferred_with_evidence():
    members, files = setuptools_like()
    c = infer_conditions(members, files)
    assert c.declared() == {"timestamps": "sdist", "clock": CLOCK, "umask": "022"}
    evidence = dict(c.evidence)
    assert evidence["timestamps"].startswith("3 of 3 modules found in the sdist carry its mtime")
    assert "2026-11-01T11:19:38Z" in evidence["clock"]


def test_a_local_time_zone_is_inferred_and_the_clock_is_given_in_utc():
    members, files = setuptools_like(offset=PLUS_TWO)
    c = infer_conditions(members, files)
    assert c.utc_offset == PLUS_TWO and c.clock == CLOCK
    assert "+0200" in dict(c.evidence)["utc-offset"]


def test_backend_constant_stamps_are_not_a_clock():
    members, files = setuptools_like()
    members = [m if "dist-info" not in m.name else WheelMember(m.name, (2016, 1, 1, 0, 0, 0), m.mode, m.size)
               for m in members]
    assert infer_conditions(members, files).clock is None  # flit's fixed dist-info stamp


def test_one_stamp_for_every_member_is_source_date_epoch_not_sdist_mtimes():
    members, files = setuptools_like()
    members = [WheelMember(m.name, dt(CLOCK), m.mode, m.size) for m in members]
    assert infer_conditions(members, files).timestamps is None


def test_group_writable_sources_need_the_sdist_modes_and_the_umask():
    members, files = setuptools_like(mode=0o664)
    members = [WheelMember(m.name, m.date_time, 0o664, m.size) for m in members]
    c = infer_conditions(members, files)
    assert c.modes == "sdist" and c.umask == "002"


def test_unrelated_files_are_not_matched_by_name_alone():
    members, files = setuptools_like()
    files = [SdistFile(f.path, f.mtime, f.mode, f.size + 1) for f in files]  # other sizes: other files
    assert infer_conditions(members, files).timestamps is None


# -- the declaration's table -----------------------------------------------------------------------

def test_files_written_before_the_clock_are_named_with_their_stamps():
    members, files = setuptools_like()
    members += [WheelMember("x-1.dist-info/top_level.txt", dt(CLOCK - 4), 0o644, 5),
                WheelMember("x-1.dist-info/entry_points.txt", dt(CLOCK - 4), 0o644, 7),
                WheelMember("x-1.dist-info/WHEEL", dt(CLOCK), 0o644, 9)]
    c = infer_conditions(members, files)
    assert c.clock == CLOCK
    assert c.written == (("entry_points.txt", CLOCK - 4), ("top_level.txt", CLOCK - 4))
    assert "2 of those members carry an earlier stamp" in dict(c.evidence)["written"]


def test_a_name_stamped_at_two_moments_is_left_to_the_clock():
    members, files = setuptools_like()
    members += [WheelMember("x-1.dist-info/licenses/LICENSE", dt(CLOCK - 2), 0o644, 5),
                WheelMember("x-1.dist-info/licenses/sub/LICENSE", dt(CLOCK - 6), 0o644, 5)]
    assert infer_conditions(members, files).written is None


def test_a_windows_host_is_inferred_from_every_member_recording_ms_dos():
    members, files = setuptools_like()
    windows = [replace(m, create_system=0) for m in members]
    assert infer_conditions(members, files).host is None
    assert infer_conditions(windows, files, crlf_metadata=True).host == "windows"
    assert infer_conditions(windows[:-1] + members[-1:], files).host is None  # one Unix member: not Windows


def parsed(table: dict) -> tuple[BuildConditions, list[str]]:
    problems: list[str] = []
    c = parse_conditions(table, lambda fp, msg: problems.append(f"{'.'.join(map(str, fp))}: {msg}"),
                         ("build", "conditions"))
    return c, problems


def test_conditions_parse_with_evidence():
    c, problems = parsed({"timestamps": "sdist", "utc-offset": -330, "clock": CLOCK, "umask": "002",
                          "modes": "sdist", "evidence": {k: "seen" for k in
                                                         ("timestamps", "utc-offset", "clock", "umask", "modes")}})
    assert problems == []
    assert c.describe() == "sdist mtimes, TZ -0530, umask 002, sdist modes, frozen clock 1793531978"


@pytest.mark.parametrize("table,field", [
    ({"timestamps": "now", "evidence": {"timestamps": "x"}}, "build.conditions.timestamps"),
    ({"utc-offset": 7, "evidence": {"utc-offset": "x"}}, "build.conditions.utc-offset"),
    ({"utc-offset": 100000, "evidence": {"utc-offset": "x"}}, "build.conditions.utc-offset"),
    ({"clock": 4354819200, "evidence": {"clock": "x"}}, "build.conditions.clock"),
    ({"umask": 18, "evidence": {"umask": "x"}}, "build.conditions.umask"),
    ({"umask": "0222", "evidence": {"umask": "x"}}, "build.conditions.umask"),
    ({"modes": "all", "evidence": {"modes": "x"}}, "build.conditions.modes"),
    ({"clock": CLOCK}, "build.conditions.evidence.clock"),
    ({"evidence": {"clock": "x"}}, "build.conditions.evidence.clock"),
    ({"faketime": "x"}, "build.conditions.faketime"),
    ({"clock": CLOCK, "written": {"a/b.txt": CLOCK}, "evidence": {"clock": "x", "written": "x"}},
     "build.conditions.written.a/b.txt"),
    ({"clock": CLOCK, "written": {"..": CLOCK}, "evidence": {"clock": "x", "written": "x"}},
     "build.conditions.written..."),
    ({"clock": CLOCK, "written": {"WHEEL": "soon"}, "evidence": {"clock": "x", "written": "x"}},
     "build.conditions.written.WHEEL"),
    ({"clock": CLOCK, "written": {}, "evidence": {"clock": "x", "written": "x"}}, "build.conditions.written"),
    ({"written": {"WHEEL": CLOCK}, "evidence": {"written": "x"}}, "build.conditions.written"),
    ({"host": "macos", "evidence": {"host": "x"}}, "build.conditions.host"),
])
def test_bad_conditions_name_their_field(table, field):
    _, problems = parsed(table)
    assert any(p.startswith(field + ":") for p in problems), problems


def test_posix_tz_strings_flip_the_sign():
    assert tz_string(120) == "<+0200>-02:00"
    assert tz_string(-330) == "<-0530>+05:30"
    assert tz_string(0) == "<+0000>+00:00"


# -- in the sandbox: the conditions reproduce upstream's bytes -------------------------------------

def make_mtime_sdist(dest: Path) -> Path:
    top = "stamped-1.0"
    members = {"pyproject.toml": ('[build-system]\nrequires = []\nbuild-backend = "tinybackend"\n'
                                  'backend-path = ["."]\n', 1793000000),
               "tinybackend.py": (MTIME_BACKEND.read_text(), 1793000000),
               "tiny.json": ('{"name": "stamped", "version": "1.0", "files": ["pkg_a.py", "pkg_b.py", "pkg_c.py"]}',
                             1793000000),
               "PKG-INFO": ("Metadata-Version: 2.1\nName: stamped\nVersion: 1.0\n", 1793000000)}
    members |= {n: (f"X = {i}\n", t) for i, (n, t) in enumerate(SOURCE_MTIMES.items())}
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "stamped-1.0.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for rel, (text, mtime) in sorted(members.items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(text.encode()), mtime, 0o644
            tf.addfile(info, io.BytesIO(text.encode()))
    return path


def build_upstream_at_clock(sdist: Path, dest: Path, **extra_env: str) -> Path:
    """Upstream: built from its checkout (the sdist's mtimes) in UTC+02:00 at CLOCK."""
    work = dest / "checkout"
    with tarfile.open(sdist) as tf:
        tf.extractall(work, filter="data")
    src = work / "stamped-1.0"
    out = dest / "upstream"
    out.mkdir()
    env = {**os.environ, "TZ": tz_string(PLUS_TWO), "MTIMEBACKEND_CLOCK": str(CLOCK), **extra_env}
    code = "import sys, tinybackend; print(tinybackend.build_wheel(sys.argv[1]))"
    name = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    return out / name


@pytest.mark.integration
@needs_bwrap
def test_inferred_conditions_rebuild_upstream_bit_for_bit(world):
    sdist = make_mtime_sdist(world.dist / "stamped")
    wheel = build_upstream_at_clock(sdist, world.dist / "stamped")
    inferred = infer_conditions(read_wheel_members(wheel), read_sdist_files(sdist))
    assert inferred.declared() == {"timestamps": "sdist", "utc-offset": PLUS_TWO, "clock": CLOCK, "umask": "022"}

    path = path_for("stamped", world.declarations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(declaration_text("stamped", "1.0", sdist, wheel, url_of=world.url_of))
    plain = load(path, world.declarations)
    before = build(plain, world.store, log=lambda m: None)
    assert before.verdict == "equivalent"  # SOURCE_DATE_EPOCH stamps every member alike

    table = "\n[build.conditions]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"')
                                                for k, v in inferred.declared().items())
    table += "\n[build.conditions.evidence]\n" + "".join(f'{k} = "{e}"\n' for k, e in inferred.evidence)
    path.write_text(declaration_text("stamped", "1.0", sdist, wheel, url_of=world.url_of, extra=table))
    decl = load(path, world.declarations)
    assert derivation(decl).id != derivation(plain).id  # the conditions are inputs
    record = build(decl, world.store, log=lambda m: None)
    assert record.verdict == "identical", record.summary
    assert record.derivation["conditions"]["clock"] == CLOCK
    assert "under: sdist mtimes, TZ +0200, umask 022, frozen clock 1793531978" in verdict_line(record)
    with zipfile.ZipFile(world.store.verified_path(record.output.sha256)) as zf:
        assert zf.getinfo("stamped-1.0.dist-info/METADATA").date_time == dt(CLOCK, PLUS_TWO)


def declare_with_conditions(world, sdist: Path, wheel: Path, conditions: BuildConditions):
    """The declaration of ``stamped`` with ``conditions`` written as declare writes them (tomlkit)."""
    import tomlkit

    from pipeline.realise.declare import set_conditions

    path = path_for("stamped", world.declarations)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = tomlkit.parse(declaration_text("stamped", "1.0", sdist, wheel, url_of=world.url_of))
    set_conditions(doc["build"], conditions)
    path.write_text(tomlkit.dumps(doc))
    return load(path, world.declarations)


@pytest.mark.integration
@needs_bwrap
def test_a_windows_build_with_files_written_before_the_clock_is_reproduced(world):
    """Upstream built on Windows (CRLF text, zip host 0, mode 0666) and wrote top_level.txt 4 s before
    METADATA and RECORD: the inferred ``host`` and ``written`` conditions give its bytes; the backend
    writes text files plainly and takes modes and stamps from os.stat/os.fstat."""
    sdist = make_mtime_sdist(world.dist / "stamped")
    wheel = build_upstream_at_clock(sdist, world.dist / "stamped", MTIMEBACKEND_AS_WINDOWS="1",
                                    MTIMEBACKEND_EARLIER="4")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("stamped-1.0.dist-info/METADATA").count(b"\r\n") == 3
    inferred = infer_from_archives(wheel, sdist, sdist.name, None)
    assert inferred.host == "windows" and inferred.written == (("top_level.txt", CLOCK - 4),)
    assert "METADATA ends its lines with CRLF" in dict(inferred.evidence)["host"]

    without = replace(inferred, host=None, written=None,
                      evidence=tuple(e for e in inferred.evidence if e[0] not in ("host", "written")))
    assert build(declare_with_conditions(world, sdist, wheel, without), world.store,
                 log=lambda m: None).verdict == "differs"  # LF where upstream has CRLF
    record = build(declare_with_conditions(world, sdist, wheel, inferred), world.store, log=lambda m: None)
    assert record.verdict == "identical", record.summary
    assert "1 file written earlier, windows host" in verdict_line(record)
    with zipfile.ZipFile(world.store.verified_path(record.output.sha256)) as zf:
        info = zf.getinfo("stamped-1.0.dist-info/top_level.txt")
        assert (info.create_system, info.external_attr >> 16, info.date_time) == (0, 0o100666, dt(CLOCK - 4, PLUS_TWO))


def test_conditions_change_the_derivation_id(world):
    decl = world.declare_tiny()
    from dataclasses import replace
    conditions = BuildConditions(clock=CLOCK, evidence=(("clock", "x"),))
    frozen = replace(decl, build=replace(decl.build, conditions=conditions))
    assert derivation(decl).id != Derivation(frozen, derivation(decl).sandbox_spec, derivation(decl).target).id


def test_modules_built_from_another_clone_share_its_checkout_stamp():
    members, files = setuptools_like()
    checkout = CLOCK - 4
    members = [WheelMember(m.name, dt(checkout) if "dist-info" not in m.name else m.date_time, m.mode, m.size)
               for m in members]
    c = infer_conditions(members, files)
    assert c.declared() == {"timestamps": "checkout", "checkout": checkout, "clock": CLOCK, "umask": "022"}


def test_a_backend_constant_is_not_a_checkout():
    members, files = setuptools_like()
    members = [WheelMember(m.name, (1980, 1, 1, 0, 0, 0) if "dist-info" not in m.name else m.date_time,
                           m.mode, m.size) for m in members]
    assert infer_conditions(members, files).timestamps is None


def test_a_py2_py3_setuptools_wheel_needs_universal():
    from pipeline.realise.declare import universal_settings
    assert universal_settings("six-1.17.0-py2.py3-none-any.whl", "setuptools.build_meta:__legacy__") == (
        ("--build-option", ("--universal",)),)
    assert universal_settings("six-1.17.0-py3-none-any.whl", "setuptools.build_meta") == ()
    assert universal_settings("x-1-py2.py3-none-any.whl", "flit_core.buildapi") == ()  # flit tags it itself


# -- setuptools: umask from the members written anew, modes from those copied ---------------------

def mixed_umask_wheel(wheel_mode: int, module_mode: int, data_mode: int
                      ) -> tuple[list[WheelMember], list[SdistFile]]:
    """A setuptools wheel: a module build_py wrote anew, package data and an egg-info file it copied."""
    stamp = (2026, 1, 1, 0, 0, 0)
    files = [SdistFile("src/pkg/mod.py", 1.0, 0o664, 10), SdistFile("src/pkg/py.typed", 1.0, 0o664, 0),
             SdistFile("LICENSE", 1.0, 0o664, 5), SdistFile("pkg.egg-info/top_level.txt", 1.0, 0o644, 4)]
    members = [WheelMember("pkg/mod.py", stamp, module_mode, 10), WheelMember("pkg/py.typed", stamp, data_mode, 0),
               WheelMember("pkg-1.dist-info/licenses/LICENSE", stamp, data_mode, 5),
               WheelMember("pkg-1.dist-info/top_level.txt", stamp, 0o644, 4),
               WheelMember("pkg-1.dist-info/WHEEL", stamp, wheel_mode, 90),
               WheelMember("pkg-1.dist-info/RECORD", stamp, 0o664, 0)]
    return members, files


def test_setuptools_umask_is_the_one_wheel_was_written_under_not_the_majority():
    # cachetools 8.0.1: modules and WHEEL written under umask 002, copies through the data filter (0644)
    members, files = mixed_umask_wheel(wheel_mode=0o664, module_mode=0o664, data_mode=0o644)
    c = setuptools_modes(members, files, infer_conditions(members, files))
    assert (c.umask, c.modes) == ("002", None)
    assert dict(c.evidence)["umask"].startswith("WHEEL, which bdist_wheel writes anew, has mode 0664, as 1 of 1")
    assert "modes" not in dict(c.evidence)


def test_setuptools_copies_keeping_group_write_need_the_sdist_modes_under_another_umask():
    # mccabe 0.7.0: modules and WHEEL under umask 022, copies keep the checkout's 0664
    members, files = mixed_umask_wheel(wheel_mode=0o644, module_mode=0o644, data_mode=0o664)
    c = setuptools_modes(members, files, infer_conditions(members, files))
    assert (c.umask, c.modes) == ("022", "sdist")
    assert dict(c.evidence)["modes"].startswith("2 of 2 members setuptools copies keep the sdist's group")


def test_setuptools_modes_need_a_wheel_file_with_a_mode():
    members, files = mixed_umask_wheel(wheel_mode=0, module_mode=0o664, data_mode=0o644)
    before = infer_conditions(members, files)
    assert setuptools_modes(members, files, before) == before
