"""`doit check`: for each rule, a fixture that passes and one that fails."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from pipeline.model import environments
from pipeline.model.declaration import Artifact, Declaration, Deselection, TestSpec
from pipeline.policy.check import run_rules
from pipeline.wheel.facts import WheelFacts, inspect, record_hash

ENVS = environments.load(Path(__file__).resolve().parent.parent / "declarations" / "environments.toml")
SHA = "0" * 64


def decl(name: str, version: str = "1.0", *, deps: tuple[str, ...] = (), extras: tuple[str, ...] = (),
         wheels: tuple[str, ...] | None = None, requires_python: str | None = None, **kw) -> Declaration:
    from pipeline.model.declaration import BuildSpec

    files = wheels or (f"{name.replace('-', '_')}-{version}-py3-none-any.whl",)
    return Declaration(Path(f"declarations/{name[:2]}/{name}.toml"), name, version, requires_python, extras,
                       deps, Artifact(f"{name}-{version}.tar.gz", "https://x/s", SHA, 1),
                       tuple(Artifact(f, f"https://x/{f}", SHA, 1) for f in files),
                       BuildSpec("b", (), (), None, 315532800, ()), **kw)


def no_facts(d, w):
    return None


def run(*decls: Declaration, facts=no_facts):
    return run_rules({d.canonical_name: d for d in decls}, ENVS, facts)


def rules_of(failures) -> set[str]:
    return {f.rule for f in failures}


def test_environments_expand_with_packaging():
    assert len(ENVS) == 20
    linux = next(e for e in ENVS if e.name == "cp311-manylinux-x86_64")
    assert str(linux.tags[0]) == "cp311-cp311-manylinux_2_28_x86_64"
    names = {str(t) for t in linux.tags}
    assert {"cp311-abi3-manylinux2014_x86_64", "py3-none-any", "cp39-abi3-manylinux1_x86_64"} <= names
    mac = next(e for e in ENVS if e.name == "cp314-macos-arm64")
    assert "cp314-cp314-macosx_11_0_universal2" in {str(t) for t in mac.tags}
    assert mac.markers["sys_platform"] == "darwin" and mac.markers["platform_machine"] == "arm64"


def test_clean_set_passes():
    assert run(decl("a", deps=("b>=1",)), decl("b")) == []


def test_single_version():
    failures = run(decl("a", wheels=("a-2.0-py3-none-any.whl",)))
    assert rules_of(failures) == {"single-version"}


@pytest.mark.parametrize("wheels", [
    ("a-1.0-py3-none-any.whl", "a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
    ("a-1.0-cp311-abi3-manylinux_2_17_x86_64.whl", "a-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
    ("a-1.0-cp311-cp311-manylinux2014_x86_64.whl", "a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"),
    ("a-1.0-cp311-cp311-macosx_11_0_universal2.whl", "a-1.0-cp311-cp311-macosx_11_0_arm64.whl"),
    ("a-1.0-cp311-cp311-macosx_10_9_x86_64.whl", "a-1.0-cp311-cp311-macosx_10_12_x86_64.whl"),
])
def test_platform_unique_catches_overlaps(wheels):
    failures = [f for f in run(decl("a", wheels=wheels)) if f.rule == "platform-unique"]
    assert failures and all(set(wheels) <= set(f.message.split(": ")[1].split(", ")) for f in failures)


def test_platform_unique_passes_disjoint_platform_wheels():
    wheels = ("a-1.0-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
              "a-1.0-cp311-abi3-manylinux_2_17_aarch64.whl", "a-1.0-cp311-abi3-macosx_10_9_universal2.whl",
              "a-1.0-cp311-abi3-win_amd64.whl")
    assert run(decl("a", wheels=wheels)) == []


def test_coverage_fails_and_unsupported_needs_a_reason():
    only_linux = ("a-1.0-cp311-abi3-manylinux_2_17_x86_64.whl",)
    failures = run(decl("a", wheels=only_linux))
    assert rules_of(failures) == {"coverage"}
    assert "cp312-windows-amd64" in {f.environment for f in failures}
    left_out = (Deselection("*-manylinux-aarch64", "no arm builders upstream"),
                Deselection("macos-*", "no mac wheels"), Deselection("windows-amd64", "no windows wheels"))
    assert run(decl("a", wheels=only_linux, unsupported=left_out)) == []
    # requires-python narrows the environments that need a wheel
    only_cp314 = ("a-1.0-cp314-cp314-win_amd64.whl",)
    failures = run(decl("a", wheels=only_cp314, requires_python=">=3.14"))
    assert "cp313-windows-amd64" not in {f.environment for f in failures}


def facts(**kw) -> WheelFacts:
    base = dict(filename="a-1.0-py3-none-any.whl", metadata=b"x", name="a", version="1.0",
                requires_python=None, requires_dist=[], provides_extra=[])
    return WheelFacts(**{**base, **kw})


def test_names_rule():
    assert run(decl("a"), facts=lambda d, w: facts()) == []
    failures = run(decl("a"), facts=lambda d, w: facts(name="b", version="1.1"))
    assert rules_of(failures) == {"names"} and len(failures) == 2


def test_metadata_rule_compares_requirements_with_markers():
    d = decl("a", deps=('b>=1; python_version < "3.13"',), extras=("cli",), requires_python=">=3.9")
    same = facts(requires_dist=["b >= 1 ; python_version<'3.13'"], provides_extra=["cli"],
                 requires_python=">= 3.9")
    assert run(d, decl("b"), facts=lambda d_, w: same if d_.name == "a" else facts(name="b")) == []
    other = facts(requires_dist=['b>=1; python_version < "3.12"'], provides_extra=[], requires_python=">=3.8")
    failures = run(d, decl("b"), facts=lambda d_, w: other if d_.name == "a" else facts(name="b"))
    messages = " ".join(f.message for f in failures)
    assert rules_of(failures) == {"metadata", "extras"} and len(failures) == 4
    assert "Requires-Python" in messages and "'cli' is not a Provides-Extra" in messages
    # extras lists what the set offers: a subset of Provides-Extra is fine
    fewer = decl("a", deps=d.dependencies, requires_python=">=3.9")
    assert run(fewer, decl("b"), facts=lambda d_, w: same if d_.name == "a" else facts(name="b")) == []


def test_closure_missing_project_and_unsatisfied_version():
    failures = run(decl("a", deps=("b>=2", "c")), decl("b"))
    assert rules_of(failures) == {"closure"}
    assert {(f.requirement, f.environment) for f in failures} >= {("b>=2", "cp311-manylinux-x86_64"),
                                                                  ("c", "cp314-windows-amd64")}
    assert any("the set has b 1.0" in f.message for f in failures)


def test_closure_follows_markers_per_environment():
    failures = run(decl("a", deps=('colorama; sys_platform == "win32"',)))
    assert failures and {f.environment for f in failures} == {f"cp3{v}-windows-amd64" for v in (11, 12, 13, 14)}


def test_closure_follows_requested_extras_transitively():
    a = decl("a", deps=("b[fast]",))
    b = decl("b", extras=("fast",), deps=('c>=1; extra == "fast"',))
    c = decl("c", deps=('d; extra == "never"',))  # c[never] is not offered: its missing d is not a failure
    failures = run(a, b, c)
    assert failures == []
    failures = run(a, b)  # c missing: b offers [fast], so the extras rule requires its closure
    assert rules_of(failures) == {"extras"} and len(failures) == 1
    assert failures[0].project == "b" and failures[0].requirement == 'c>=1; extra == "fast"'
    assert failures[0].environment == "all 20 environments"
    failures = run(decl("a", deps=("b[turbo]",)), b, c)
    assert any("does not offer extra 'turbo'" in f.message for f in failures)


def test_closure_prereleases_follow_pep_440():
    assert run(decl("a", deps=("b>=1",)), decl("b", "2.0b1")) == []        # the only match is a pre-release
    assert run(decl("a", deps=("b>=1,<2",)), decl("b", "2.0b1")) != []
    assert run(decl("a", deps=("b>=2.0b1",)), decl("b", "2.0b2")) == []


def test_test_closure():
    t = TestSpec(requires=("pytest>=8",))
    assert rules_of(run(decl("a", test=t))) == {"test-closure"}
    assert run(decl("a", test=t), decl("pytest", "8.1")) == []


# -- wheel-integrity, on real archives made here -------------------------------------------------

def make_wheel(members: dict[str, bytes], *, record: str | None = None, symlink: str | None = None,
               duplicate: str | None = None) -> bytes:
    members = dict(members)
    di = "a-1.0.dist-info"
    members.setdefault(f"{di}/METADATA", b"Metadata-Version: 2.1\nName: a\nVersion: 1.0\n")
    members.setdefault(f"{di}/WHEEL", b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    if record is None:
        record = "".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in members.items()) + f"{di}/RECORD,,\n"
    members[f"{di}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in members.items():
            zf.writestr(n, d)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777) << 16
            zf.writestr(info, b"/etc/passwd")
        if duplicate:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zf.writestr(duplicate, b"again")
    return buf.getvalue()


def test_good_wheel_has_no_problems():
    f = inspect(make_wheel({"a.py": b"X = 1\n"}), "a-1.0-py3-none-any.whl")
    assert f.problems == [] and f.name == "a" and f.version == "1.0"


@pytest.mark.parametrize("kwargs,fragment", [
    ({"members": {"/abs.py": b""}}, "absolute path"),
    ({"members": {"a/../../x.py": b""}}, "'..' in path"),
    ({"members": {"a\\b.py": b""}}, "backslash"),
    ({"members": {"a.py": b""}, "symlink": "link.py"}, "symlink member"),
    ({"members": {"a.py": b"1"}, "duplicate": "a.py"}, "duplicate member"),
    ({"members": {"a.py": b"1"}, "record": "a.py,sha256=AAAA,1\na-1.0.dist-info/RECORD,,\n"}, "hash of 'a.py'"),
    ({"members": {"a.py": b"1", "b.py": b"2"}, "record": None}, None),
    ({"members": {"big.bin": b"\0" * (3 << 20)}}, "expands"),
    ({"members": {"a-1.0.dist-info/WHEEL": b"Wheel-Version: 2.0\nRoot-Is-Purelib: x\nTag: py2-none-any\n"}},
     "Wheel-Version"),
    ({"members": {"a-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: a\nVersion: one\n"}}, "METADATA"),
])
def test_wheel_integrity_problems(kwargs, fragment):
    members = kwargs.pop("members")
    data = make_wheel(members, **kwargs)
    problems = inspect(data, "a-1.0-py3-none-any.whl").problems
    if fragment is None:
        assert problems == []
    else:
        assert any(fragment in p for p in problems), problems


def test_record_must_list_every_member():
    record = "a-1.0.dist-info/RECORD,,\n"
    problems = inspect(make_wheel({"a.py": b"1"}, record=record), "a-1.0-py3-none-any.whl").problems
    assert any("'a.py' is not listed" in p for p in problems)
    not_zip = inspect(b"not a zip", "a-1.0-py3-none-any.whl").problems
    assert not_zip == ["not a valid zip archive: File is not a zip file"]


def test_integrity_failures_are_reported_by_check():
    bad = inspect(make_wheel({"/abs.py": b""}), "a-1.0-py3-none-any.whl")
    failures = run(decl("a"), facts=lambda d, w: bad)
    assert rules_of(failures) == {"wheel-integrity"}


def test_doit_check_exit_status_and_json(world):
    world.declare_tiny("tiny", dependencies=["missing-project>=1"])
    (world.declarations / "environments.toml").write_text(
        (Path(__file__).resolve().parent.parent / "declarations" / "environments.toml").read_text())
    result = world.cli("check")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(": closure: tiny [cp311-manylinux-x86_64]: requires missing-project" in line for line in lines)
    assert lines[-1].startswith("check: 20 failures (closure 20)")
    as_json = json.loads(world.cli("check", "--json").stdout)
    assert as_json["ok"] is False and as_json["failures"][0]["rule"] == "closure"
    path = world.declarations / "ti" / "tiny.toml"
    path.write_text(path.read_text().replace('dependencies = ["missing-project>=1"]', "dependencies = []"))
    result = world.cli("check")
    assert result.returncode == 1  # METADATA still lists it: the metadata rule catches the edit
    assert "metadata: tiny: tiny-1.0-py3-none-any.whl: Requires-Dist not declared" in result.stdout
