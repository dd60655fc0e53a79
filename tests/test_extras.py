"""Extras the set offers: check's `extras` rule, declare's proposal and the kept choice (model/extras.py)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import tomlkit

from pipeline.model.declaration import load
from pipeline.model.extras import ExtraChoice, PreviousChoice, keep_choice, member_of, previous_choice, propose
from pipeline.realise.declare import WheelFacts, choose_extras, extras_array, write
from tests.test_check import ENVS, decl, run

REPO = Path(__file__).resolve().parent.parent
WINDOWS = [f"cp3{v}-windows-amd64" for v in (11, 12, 13, 14)]


def extras_failures(*decls):
    return [f for f in run(*decls) if f.rule == "extras"]


# -- check: the extras rule ----------------------------------------------------------------------

def test_an_offered_extra_that_is_not_closed_fails_once_per_missing_project():
    a = decl("a", extras=("cli",), deps=('click>=8; extra == "cli"', 'rich; extra == "cli"'))
    failures = extras_failures(a, decl("click", "8.1"))
    assert len(failures) == 1
    (f,) = failures
    assert (f.project, f.requirement, f.environment) == ("a", 'rich; extra == "cli"', "all 20 environments")
    assert f.message == "extra 'cli': requires rich, which is not in the set"
    assert str(f) == ("declarations/a/a.toml: extras: a [all 20 environments]: extra 'cli': requires rich, which is "
                      "not in the set (requirement: rich; extra == \"cli\")")
    assert extras_failures(a, decl("click", "8.1"), decl("rich")) == []


def test_an_extra_that_is_not_offered_is_ignored():
    # Provides-Extra "cli" exists upstream, but the declaration does not offer it
    a = decl("a", deps=('rich; extra == "cli"',))
    assert run(a) == []


def test_version_and_availability_of_the_extras_requirements():
    a = decl("a", extras=("x",), deps=('b>=2; extra == "x"', 'c; extra == "x"'))
    failures = extras_failures(a, decl("b", "1.0"), decl("c", requires_python=">=3.13"))
    messages = {(f.environment, f.message) for f in failures}
    assert ("all 20 environments", "extra 'x': requires b>=2; the set has 1.0") in messages
    assert ("cp311-*, cp312-*", "extra 'x': requires c, which is not available here (requires-python >=3.13)") \
        in messages


def test_markers_combining_extra_and_platform_are_evaluated_per_environment():
    a = decl("a", extras=("win", "old"), deps=(
        'pywin32; sys_platform == "win32" and extra == "win"',
        'backport; python_version < "3.13" and extra == "old"',
        'arm-only; platform_machine == "aarch64" and python_version >= "3.14" and extra == "old"',
    ))
    failures = {f.requirement.split(";")[0]: f.environment for f in extras_failures(a)}
    assert failures == {"pywin32": ", ".join(WINDOWS), "backport": "cp311-*, cp312-*",
                        "arm-only": "cp314-manylinux-aarch64"}


def test_requirements_the_base_already_needs_are_the_closure_rules():
    # true without the extra on 3.11/3.12: the base needs it there (closure); the extra adds it on 3.13+
    a = decl("a", extras=("x",), deps=('b; python_version < "3.13" or extra == "x"',))
    failures = run(a)
    by_rule = {r: sorted({f.environment for f in failures if f.rule == r}) for r in ("closure", "extras")}
    assert by_rule["extras"] == ["cp313-*, cp314-*"]
    assert len(by_rule["closure"]) == 10 and all(e.startswith(("cp311", "cp312")) for e in by_rule["closure"])


def test_recursive_extras_inside_an_extra_count():
    a = decl("a", extras=("all",), deps=('b[fast]; extra == "all"',))
    b = decl("b", extras=("fast",), deps=('speedups; extra == "fast"',))
    failures = extras_failures(a, b)
    assert {(f.project, f.message) for f in failures} == {
        ("a", "extra 'all' (via b[fast]): requires speedups, which is not in the set"),
        ("b", "extra 'fast': requires speedups, which is not in the set"),
    }
    assert extras_failures(a, b, decl("speedups")) == []
    # the requested extra must be offered: b provides "fast" upstream but does not offer it
    b_plain = decl("b", deps=b.dependencies)
    (f,) = extras_failures(a, b_plain, decl("speedups"))
    assert f.message == "extra 'all': requires b[fast], and b does not offer extra 'fast'"
    # ... also from a base requirement (the closure rule)
    failures = run(decl("c", deps=("b[fast]",)), b_plain)
    assert [f.message for f in failures][:1] == ["b 1.0 does not offer extra 'fast'"]


def test_self_referencing_extras():
    a = decl("a", extras=("all", "x", "y"), deps=('a[x,y]; extra == "all"', 'b; extra == "x"', 'c; extra == "y"'))
    failures = extras_failures(a, decl("b"))
    assert {f.message for f in failures} == {"extra 'all' (via a[y]): requires c, which is not in the set",
                                            "extra 'y': requires c, which is not in the set"}


def test_check_on_real_wheels_prints_the_extras_line(world):
    (world.declarations / "environments.toml").write_text((REPO / "declarations" / "environments.toml").read_text())
    world.declare_tiny("tiny", extras=["fast", "docs"],
                       dependencies=['missing-speedups>=1; extra == "fast"', 'sphinx; extra == "docs"'])
    path = world.declarations / "ti" / "tiny.toml"
    path.write_text(path.read_text().replace('extras = ["fast", "docs"]', 'extras = ["fast"]'))
    result = world.cli("check")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}: extras: tiny [all 20 environments]: extra 'fast': requires missing-speedups, which is not in "
        "the set (requirement: missing-speedups>=1; extra == \"fast\")",
        "check: 1 failures (extras 1) in 1 declarations over 20 environments",
    ]
    doc = json.loads(world.cli("check", "--json").stdout)
    assert doc["rules"]["extras"] and doc["failures"][0]["environment"] == "all 20 environments"
    path.write_text(path.read_text().replace('extras = ["fast"]', "extras = []"))
    assert world.cli("check").stdout == "check: ok: 1 declarations, 9 rules, 20 environments\n"


# -- declare: propose, keep the reviewed choice, write ------------------------------------------

DEPS = ('rich; extra == "cli"', 'b; extra == "fast"', 'missing; extra == "docs"', 'a[cli,fast]; extra == "all"',
        'a[docs]; extra == "everything"')


def test_propose_offers_the_extras_whose_closure_is_in_the_set():
    members = {d.canonical_name: member_of(d, ENVS) for d in (decl("b"),)}
    choices = propose("a", "1.0", ["cli", "fast", "docs", "all", "everything"], DEPS, ">=3.9", members, ENVS)
    by_name = {c.name: c for c in choices}
    assert [c.name for c in choices if c.offered] == ["fast"]
    assert by_name["cli"].reason == "requires rich, not in the set"
    assert by_name["all"].reason == "requires rich, not in the set"   # through a[cli]
    assert by_name["everything"].reason == "requires missing, not in the set"   # through a[docs]
    # with the names about to be declared (declare --with-deps), their presence counts
    choices = propose("a", "1.0", ["cli", "fast", "docs", "all", "everything"], DEPS, ">=3.9", members, ENVS,
                      will_declare={"rich"})
    assert sorted(c.name for c in choices if c.offered) == ["all", "cli", "fast"]


def test_propose_normalises_names_and_respects_requires_python():
    members = {"b": member_of(decl("b", requires_python=">=3.12"), ENVS)}
    # a itself needs 3.12+: b's requires-python gap does not matter there
    (c,) = propose("a", "1.0", ["Fast_Path"], ('b; extra == "fast-path"',), ">=3.12", members, ENVS)
    assert (c.name, c.offered) == ("fast-path", True)
    (c,) = propose("a", "1.0", ["fast-path"], ('b; extra == "fast-path"',), ">=3.10", members, ENVS)
    assert not c.offered and "not available here (requires-python >=3.12)" in (c.reason or "")


def test_keep_choice():
    proposal = [ExtraChoice("cli", False, "requires rich, not in the set"), ExtraChoice("docs", True),
                ExtraChoice("fast", True), ExtraChoice("new", True), ExtraChoice("old", False, "requires x")]
    previous = PreviousChoice(frozenset({"cli", "fast", "gone"}), {"docs": "pulls in sphinx; not for users"})
    kept = {c.name: c for c in keep_choice(proposal, previous)}
    assert kept["docs"] == ExtraChoice("docs", False, "pulls in sphinx; not for users", reviewed=True)
    note = "kept offered as before, but requires rich, not in the set"
    assert kept["cli"] == ExtraChoice("cli", True, None, note=note)
    assert kept["fast"].offered and kept["new"].offered and not kept["old"].offered
    assert "gone" not in kept
    assert keep_choice(proposal, None) == proposal


def test_written_choices_round_trip_through_the_toml(tmp_path):
    choices = [ExtraChoice("cli", True), ExtraChoice("docs", False, "pulls in\nsphinx", reviewed=True),
               ExtraChoice("zz", False, "requires missing, not in the set")]
    doc = tomlkit.document()
    doc["extras"] = extras_array(choices)
    text = tomlkit.dumps(doc)
    assert text == ('extras = [\n    "cli",\n    # "docs": withheld: pulls in sphinx\n'
                    '    # "zz": not offered: requires missing, not in the set\n]\n')
    assert tomllib.loads(text) == {"extras": ["cli"]}
    d = decl("a", extras=("cli",))
    prev = previous_choice(d, text)
    assert prev == PreviousChoice(frozenset({"cli"}), {"docs": "pulls in sphinx"})


def test_declare_writes_and_keeps_the_choice(world, tmp_path):
    (world.declarations / "environments.toml").write_text((REPO / "declarations" / "environments.toml").read_text())
    base = world.declare_tiny("b")
    facts = WheelFacts(None, 315532800, ">=3.8", ["fast", "Docs", "bad name!"],
                       ['b; extra == "fast"', 'sphinx; extra == "docs"'])
    logged: list[str] = []
    choices = choose_extras("tiny", "1.0", facts, world.declarations, None, log=logged.append)
    assert [(c.name, c.offered) for c in choices] == [("docs", False), ("fast", True)]
    assert "tiny 1.0: ignoring Provides-Extra 'bad name!': not a valid extra name (PEP 685)" in logged
    assert "tiny 1.0: extra 'docs' not offered: requires sphinx, not in the set" in logged
    tiny = world.declare_tiny("tiny")
    write(tiny, existing_path=tiny.path, extras=choices)
    assert load(tiny.path, world.declarations).extras == ("fast",)
    # a reviewer withholds "fast"; regenerating keeps that, and re-proposes "docs" once sphinx is in
    tiny.path.write_text(tiny.path.read_text().replace('    "fast",\n', '    # "fast": withheld: not for users\n'))
    world.declare_tiny("sphinx")
    existing = load(tiny.path, world.declarations)
    choices = choose_extras("tiny", "1.0", facts, world.declarations, existing, log=logged.append)
    assert [(c.name, c.offered, c.reviewed) for c in choices] == [("docs", True, False), ("fast", False, True)]
    assert base.extras == ()
