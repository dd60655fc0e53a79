"""Hostile extras: a declaration's `extras` and a wheel's `Provides-Extra` are untrusted input.

Each case must end with a clear message naming the file, line and field, a non-zero exit, and nothing
written (no store, no declaration changed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.model.declaration import parse
from pipeline.model.errors import Problem
from pipeline.realise.declare import WheelFacts, choose_extras, extras_array

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


BAD_NAMES = [
    ('["Fast_Path"]', "extras[0]: not a PEP 685 normalised extra name: 'Fast_Path' (write 'fast-path')"),
    ('["ok", "<script>alert(1)</script>"]',
     "extras[1]: not a PEP 685 normalised extra name: '<script>alert(1)</script>'"),
    ('["../../etc/passwd"]', "extras[0]: not a PEP 685 normalised extra name: '../../etc/passwd'"),
    ('["fast", "fast"]', "extras[1]: extra 'fast' listed twice"),
    ('["fast--path"]', "extras[0]: not a PEP 685 normalised extra name: 'fast--path' (write 'fast-path')"),
    ('["", "x y"]', "extras[0]: not a PEP 685 normalised extra name: ''"),
]


def test_extra_names_that_are_not_normalised_are_declaration_errors(world):
    world.declare_tiny("tiny", extras=["fast"])
    path = world.declarations / "ti" / "tiny.toml"
    good = path.read_text()
    for extras, message in BAD_NAMES:
        problems: list[Problem] = []
        assert parse(path, good.replace('extras = ["fast"]', f"extras = {extras}"), problems) is None
        assert f"{path}:5: {message}" in [str(p) for p in problems], extras
    # end to end: validate and doit exit 2 naming file, line and field, and write nothing
    path.write_text(good.replace('extras = ["fast"]', 'extras = ["ok", "<script>alert(1)</script>"]'))
    before = _tree(world.root)
    line = f"{path}:5: {BAD_NAMES[1][1]}"
    result = world.cli("validate")
    assert result.returncode == 2 and f"error: {line}" in result.stderr.splitlines()
    result = world.doit("check")
    assert result.returncode != 0 and line in result.stderr and "nothing was built" in result.stderr
    assert {k: v for k, v in _tree(world.root).items() if not k.startswith("doit.db")} == before


@pytest.mark.sandbox  # `doit snapshot` builds tiny (in bubblewrap) before check refuses it
def test_an_extra_the_wheel_does_not_provide_is_named_by_file_line_and_field(world):
    (world.declarations / "environments.toml").write_text((REPO / "declarations" / "environments.toml").read_text())
    world.declare_tiny("tiny", extras=["fast"])
    path = world.declarations / "ti" / "tiny.toml"
    path.write_text(path.read_text().replace('extras = ["fast"]', 'extras = [\n    "fast",\n    "admin",\n]'))
    declarations_before = _tree(world.declarations)
    result = world.cli("check")
    assert result.returncode == 1
    assert (f"{path}:7: extras: tiny: extras[1]: 'admin' is not a Provides-Extra of tiny-1.0-py3-none-any.whl "
            "(it provides: fast)") in result.stdout.splitlines()
    assert _tree(world.declarations) == declarations_before
    # and a snapshot refuses to publish it
    result = world.doit("snapshot")
    assert result.returncode != 0 and "'admin' is not a Provides-Extra" in result.stdout + result.stderr
    assert not (world.store_root / "cars").exists() or not any((world.store_root / "cars").iterdir())


def test_hostile_provides_extra_in_a_wheel_cannot_reach_the_declaration(world):
    """An upstream METADATA that tries to smuggle TOML (a comment that reads as a reviewer's choice, a
    quote) through an extra name: declare ignores names that are not valid, with a message."""
    (world.declarations / "environments.toml").write_text((REPO / "declarations" / "environments.toml").read_text())
    evil = ['x": withheld: trusted', 'a"]\nschema = 9', "fast"]
    logged: list[str] = []
    choices = choose_extras("tiny", "1.0", WheelFacts(None, 315532800, None, evil, []), world.declarations, None,
                            log=logged.append)
    assert [(c.name, c.offered) for c in choices] == [("fast", True)]
    assert sum("not a valid extra name (PEP 685)" in m for m in logged) == 2
    import tomlkit
    doc = tomlkit.document()
    doc["extras"] = extras_array(choices)
    assert tomlkit.dumps(doc) == 'extras = ["fast"]\n'
