"""Declaration format v1: valid files load; every problem is reported with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.model.declaration import field_lines, load, load_all, path_for, shard_of
from pipeline.model.errors import DeclarationError


def test_valid_declaration_loads(world):
    decl = world.declare_tiny("tiny", "1.0", dependencies=["six>=1.0; python_version < '4'"])
    assert decl.name == "tiny" and decl.version == "1.0"
    assert decl.dependencies == ("six>=1.0; python_version < '4'",)
    assert decl.build.backend == "tinybackend" and decl.build.inputs == ()
    assert decl.wheel_for_build().filename == "tiny-1.0-py3-none-any.whl"
    assert list(load_all(world.declarations)) == ["tiny"]


def test_sharded_path():
    assert shard_of("PyYAML") == "py"
    assert path_for("Typing_Extensions", Path("/d")) == Path("/d/ty/typing-extensions.toml")


def _problems(path: Path, root: Path) -> list[str]:
    with pytest.raises(DeclarationError) as e:
        load(path, root)
    assert e.value.exit_status == 2
    return [str(p) for p in e.value.problems]


def test_malformed_toml_names_file_and_line(world):
    decl = world.declare_tiny()
    text = decl.path.read_text().replace('version = "1.0"', 'version = "1.0', 1)
    decl.path.write_text(text)
    (problem,) = _problems(decl.path, world.declarations)
    assert str(decl.path) in problem and ":3:" in problem and "malformed TOML" in problem


def test_every_problem_reported_at_once(world):
    decl = world.declare_tiny()
    text = decl.path.read_text()
    text = text.replace('version = "1.0"', "version = 1")                    # mistyped
    text = text.replace("sha256 = ", "sha256 = \"abc\"\nold = ", 1)          # bad hash + unknown key
    text = text.replace("size = ", "sizes = ", 1)                              # missing size
    text = text.replace('requires-python = ">=3.8"', 'requires-python = "=>3.8"')
    text = text.replace("dependencies = []", 'dependencies = ["six >="]')
    decl.path.write_text(text)
    problems = _problems(decl.path, world.declarations)
    lines = {p.split(": ", 2)[1]: p for p in problems}
    assert set(lines) >= {"version", "sdist.sha256", "sdist.old", "sdist.size", "sdist.sizes",
                          "requires-python", "dependencies[0]"}, problems
    assert f"{decl.path}:3: version: expected str" in lines["version"]
    # the line of the bad hash is the line of sdist.sha256
    hash_line = next(i for i, text in enumerate(decl.path.read_text().splitlines(), 1)
                     if text == 'sha256 = "abc"')
    assert lines["sdist.sha256"].startswith(f"{decl.path}:{hash_line}:")


def test_misplaced_file_and_missing_tables(world, tmp_path):
    bad = world.declarations / "zz" / "other.toml"
    bad.parent.mkdir()
    bad.write_text('schema = 1\nname = "tiny"\nversion = "1.0"\n')
    problems = _problems(bad, world.declarations)
    text = "\n".join(problems)
    assert "file should be named tiny.toml" in text and "shard directory 'ti'" in text
    assert "sdist: missing required field" in text and "build: missing required field" in text


def test_array_of_tables_lines():
    text = ('[[wheels]]\nfilename = "a"\n\n[[wheels]]\nfilename = "b"\nsha256 = "x"\n'
            '[build]\n[[build.inputs]]\nurl = 1\n')
    lines = field_lines(text)
    assert lines[("wheels", 1, "sha256")] == 6
    assert lines[("build", "inputs", 0, "url")] == 9


def test_load_all_collects_problems_from_every_file(world):
    world.declare_tiny("one")
    world.declare_tiny("two")
    for name in ("one", "two"):
        p = path_for(name, world.declarations)
        p.write_text(p.read_text().replace("schema = 1", "schema = 9"))
    with pytest.raises(DeclarationError) as e:
        load_all(world.declarations)
    assert len(e.value.problems) == 2
    assert all("unsupported schema 9" in str(p) for p in e.value.problems)


def test_invalid_declaration_makes_doit_exit_2_and_write_nothing(world):
    decl = world.declare_tiny()
    decl.path.write_text(decl.path.read_text().replace("[sdist]", "[sdist\n"))
    result = world.doit("build:tiny")
    assert result.returncode == 2, result.stderr
    assert f"{decl.path}:" in result.stderr and "malformed TOML" in result.stderr
    assert not list(world.store_root.glob("objects/sha256/*/*"))
