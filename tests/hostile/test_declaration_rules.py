"""Hostile declarations: every attack is a `FILE:LINE: FIELD: message` problem and nothing loads.

Each case edits a valid tiny declaration (served on 127.0.0.1 with the loopback opt-in) in one way
and asserts the problem names the file, the line of the edited field, and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.model.declaration import load, path_for
from pipeline.model.errors import DeclarationError

from ..conftest import World

SHA_A, SHA_B = "a" * 64, "b" * 64


def set_key(text: str, table: str, key: str, value: str) -> str:
    """Replace (or add) ``key = value`` in ``[table]`` (``""``: the top level)."""
    lines = text.splitlines()
    start = 0
    if table:
        start = next(i for i, line in enumerate(lines) if line in (f"[{table}]", f"[[{table}]]")) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        lines.insert(start, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def del_key(text: str, table: str, key: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line in (f"[{table}]", f"[[{table}]]")) + 1
    i = next(i for i in range(start, len(lines)) if lines[i].split("=", 1)[0].strip() == key)
    del lines[i]
    return "\n".join(lines) + "\n"


def wheel_input(filename: str = "dep-1.0-py3-none-any.whl", sha: str = SHA_A, size: str = "10",
                url: str | None = None) -> str:
    url = url or f"https://files.example/{filename}"
    fields = f'filename = "{filename}", url = "{url}", sha256 = "{sha}"'
    return "{ " + fields + (f", size = {size}" if size else "") + " }"


def inputs(*items: str) -> Callable[[str], str]:
    return lambda t: set_key(t, "build", "inputs", "[" + ", ".join(items) + "]")


def with_test(body: str) -> Callable[[str], str]:
    return lambda t: t + "\n[test]\n" + body + "\n"


@dataclass(frozen=True)
class Case:
    id: str
    edit: Callable[[str], str]
    field: str
    message: str
    marker: str  # a text on the line the problem must name


S = "sdist"
CASES = [
    # path traversal and foreign names in file names
    Case("sdist-dotdot", lambda t: set_key(t, S, "filename", '"../../../../pwned-1.0.tar.gz"'),
         "sdist.filename", "not a bare file name", "pwned"),
    Case("sdist-absolute", lambda t: set_key(t, S, "filename", '"/tmp/tiny-1.0.tar.gz"'),
         "sdist.filename", "not a bare file name", "/tmp/tiny"),
    Case("sdist-backslash", lambda t: set_key(t, S, "filename", r'"..\\..\\tiny-1.0.tar.gz"'),
         "sdist.filename", "not a bare file name", r"..\\"),
    Case("sdist-nul", lambda t: set_key(t, S, "filename", r'"tiny-1.0.tar.gz\u0000"'),
         "sdist.filename", "control character", r"\u0000"),
    Case("wheel-dotdot-name", lambda t: set_key(t, "wheels", "filename", '"..-1.0-py3-none-any.whl"'),
         "wheels[0].filename", "not a bare file name", '"..-1.0'),
    Case("sdist-wrong-project", lambda t: set_key(t, S, "filename", '"other-1.0.tar.gz"'),
         "sdist.filename", "not an sdist of tiny 1.0", "other-1.0"),
    Case("wheel-wrong-version", lambda t: set_key(t, "wheels", "filename", '"tiny-2.0-py3-none-any.whl"'),
         "wheels[0].filename", "not a wheel of tiny 1.0", "tiny-2.0"),
    Case("input-dotdot", inputs(wheel_input("../dep-1.0-py3-none-any.whl")),
         "build.inputs[0].filename", "not a bare file name", "../dep"),
    Case("test-source-dotdot",
         with_test(f'source = {{ filename = "../../x.tar.gz", url = "https://files.example/x.tar.gz", '
                    f'sha256 = "{SHA_A}", size = 10 }}'),
         "test.source.filename", "not a bare file name", "../../x"),
    Case("test-source-url-dotdot",
         with_test(f'source = {{ url = "https://files.example/a/..", sha256 = "{SHA_A}", size = 10 }}'),
         "test.source.url", "not a bare file name", "/a/.."),
    Case("test-source-not-an-archive",
         with_test(f'source = {{ url = "https://files.example/run.sh", sha256 = "{SHA_A}", size = 10 }}'),
         "test.source.url", "not a source archive", "run.sh"),
    Case("test-input-absolute",
         with_test("inputs = [" + wheel_input("/etc/dep-1.0-py3-none-any.whl") + "]"),
         "test.inputs[0].filename", "not a bare file name", "/etc/dep"),
    Case("backend-path-escape", lambda t: set_key(t, "build", "backend-path", '["../.."]'),
         "build.backend-path[0]", "relative path inside the source tree", '"../.."'),
    Case("name-non-ascii", lambda t: set_key(t, "", "name", '"tïny"'), "name", "non-ASCII", "tïny"),
    Case("filename-non-ascii", lambda t: set_key(t, S, "filename", '"tïny-1.0.tar.gz"'),
         "sdist.filename", "non-ASCII", "tïny"),
    # URLs
    Case("url-file", lambda t: set_key(t, S, "url", '"file:///etc/passwd"'),
         "sdist.url", "only https URLs", "file:"),
    Case("url-http-public", lambda t: set_key(t, S, "url", '"http://example.org/tiny-1.0.tar.gz"'),
         "sdist.url", "only https URLs", "http://example.org"),
    Case("url-ftp", lambda t: set_key(t, "wheels", "url", '"ftp://example.org/tiny-1.0-py3-none-any.whl"'),
         "wheels[0].url", "only https URLs", "ftp:"),
    Case("url-data", lambda t: set_key(t, S, "url", '"data:application/octet-stream;base64,AAAA"'),
         "sdist.url", "only https URLs", "data:"),
    Case("url-userinfo", lambda t: set_key(t, S, "url", '"https://user:secret@files.example/tiny-1.0.tar.gz"'),
         "sdist.url", "user name or password", "user:secret"),
    Case("url-no-host", lambda t: set_key(t, S, "url", '"https:///tiny-1.0.tar.gz"'),
         "sdist.url", "no host", "https:///"),
    Case("url-control", lambda t: set_key(t, S, "url", r'"https://files.example/a\u001b[2Jb"'),
         "sdist.url", "control character", r"\u001b"),
    Case("url-non-ascii", lambda t: set_key(t, S, "url", '"https://fïles.example/tiny-1.0.tar.gz"'),
         "sdist.url", "non-ASCII", "fïles"),
    Case("url-space", lambda t: set_key(t, S, "url", '"https://files.example/a b"'),
         "sdist.url", "whitespace", "a b"),
    # sizes
    Case("size-missing-sdist", lambda t: del_key(t, S, "size"), "sdist.size", "missing required field", "[sdist]"),
    Case("size-missing-input", inputs(wheel_input(size="")), "build.inputs[0].size", "missing required field",
         "dep-1.0"),
    Case("size-missing-test-source",
         with_test(f'source = {{ url = "https://files.example/t.tar.gz", sha256 = "{SHA_A}" }}'),
         "test.source.size", "missing required field", "t.tar.gz"),
    Case("size-zero", lambda t: set_key(t, S, "size", "0"), "sdist.size", "between 1 and", "size = 0"),
    Case("size-negative", lambda t: set_key(t, S, "size", "-1"), "sdist.size", "between 1 and", "size = -1"),
    Case("size-huge", lambda t: set_key(t, S, "size", str(2**40)), "sdist.size", "between 1 and", str(2**40)),
    # numbers
    Case("epoch-negative", lambda t: set_key(t, "build", "source-date-epoch", "-1"),
         "build.source-date-epoch", "1980-01-01", "= -1"),
    Case("epoch-1979", lambda t: set_key(t, "build", "source-date-epoch", "315532799"),
         "build.source-date-epoch", "1980-01-01", "315532799"),
    Case("epoch-2108", lambda t: set_key(t, "build", "source-date-epoch", "4354819200"),
         "build.source-date-epoch", "2107-12-31", "4354819200"),
    Case("timeout-zero", with_test("timeout = 0"), "test.timeout", "between 1 and 86400", "timeout = 0"),
    Case("timeout-ten-days", with_test("timeout = 864000"), "test.timeout", "between 1 and 86400", "864000"),
    # control characters in free text
    Case("env-ansi-escape",
         lambda t: t + '\n[build.environment]\nX = { value = "\\u001b[31m", reason = "colour" }\n',
         "build.environment.X.value", "control character", "X = "),
    Case("reason-bidi-override", lambda t: set_key(t, "", "accept-differs", '"fine\\u202e"'),
         "accept-differs", "control character", "accept-differs"),
    Case("deselect-newline",
         with_test('deselect = [{ target = "tests/test_x.py\\nrm -rf /", reason = "r" }]'),
         "test.deselect[0].target", "control character", "deselect"),
    # duplicates
    Case("duplicate-input-filename", inputs(wheel_input(), wheel_input(sha=SHA_B)),
         "build.inputs[1].filename", "listed twice", "dep-1.0"),
    Case("duplicate-input-sha256",
         inputs(wheel_input(), wheel_input("other-1.0-py3-none-any.whl")),
         "build.inputs[1].sha256", "listed twice", "other-1.0"),
    Case("duplicate-wheel",
         lambda t: t.replace("[build]", "[[wheels]]\n" + t.split("[[wheels]]\n")[1].split("\n\n")[0]
                             .replace(".whl\"", ".whl\" # again", 1) + "\n\n[build]"),
         "wheels[1].filename", "listed twice", "# again"),
    # rebuild = false needs a reviewed reason; config-settings are PEP 517 strings (issue 13)
    Case("rebuild-false-without-reason", lambda t: set_key(t, "", "rebuild", "false"),
         "rebuild", "needs a non-empty rebuild-reason", "rebuild = false"),
    Case("rebuild-false-blank-reason",
         lambda t: set_key(set_key(t, "", "rebuild", "false"), "", "rebuild-reason", '"   "'),
         "rebuild", "needs a non-empty rebuild-reason", "rebuild = false"),
    Case("rebuild-reason-without-false", lambda t: set_key(t, "", "rebuild-reason", '"trust me"'),
         "rebuild-reason", "only meaningful with rebuild = false", "trust me"),
    Case("rebuild-not-a-bool", lambda t: set_key(t, "", "rebuild", '"no"'), "rebuild", "expected bool", "rebuild"),
    Case("config-settings-not-strings", lambda t: set_key(t, "build", "config-settings", '{ "--opt" = 1 }'),
         "build.config-settings.--opt", "expected a string or a list of strings", "config-settings"),
    Case("config-settings-control-char",
         lambda t: set_key(t, "build", "config-settings", '{ "--opt" = "\\u001b[31m" }'),
         "build.config-settings.--opt", "control character", "config-settings"),
]


@dataclass(frozen=True)
class Tiny:
    path: Path
    declarations: Path


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A valid declaration's text, built once (its loopback URLs are never fetched here)."""
    root = tmp_path_factory.mktemp("tiny")
    world = World(root, root / "declarations", root / "store", root / "dist", "http://127.0.0.1:9")
    world.declarations.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")
        return world.declare_tiny().path.read_text()


@pytest.fixture
def tiny(tmp_path: Path, tiny_text: str, monkeypatch: pytest.MonkeyPatch) -> Tiny:
    monkeypatch.setenv("WHEELPROOF_ALLOW_LOOPBACK", "1")
    path = path_for("tiny", tmp_path / "declarations")
    path.parent.mkdir(parents=True)
    path.write_text(tiny_text)
    return Tiny(path, tmp_path / "declarations")


def _expected_line(text: str, marker: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def _problems(path: Path, root: Path) -> list[str]:
    with pytest.raises(DeclarationError) as e:
        load(path, root)
    assert e.value.exit_status == 2
    return [str(p) for p in e.value.problems]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_field_is_a_located_problem(tiny, case):
    decl = tiny
    text = case.edit(decl.path.read_text())
    decl.path.write_text(text, encoding="utf-8")
    problems = _problems(decl.path, tiny.declarations)
    line = _expected_line(text, case.marker)
    prefix = f"{decl.path}:{line}: {case.field}: "
    assert any(p.startswith(prefix) and case.message in p for p in problems), (prefix, case.message, problems)


def test_loopback_url_needs_the_opt_in(tiny, monkeypatch):
    decl = tiny  # URLs are http://127.0.0.1:PORT/...
    monkeypatch.delenv("WHEELPROOF_ALLOW_LOOPBACK")
    problems = _problems(decl.path, tiny.declarations)
    lines = decl.path.read_text().splitlines()
    sdist_url = next(i for i, line in enumerate(lines, 1) if line.startswith("url = ") and "tiny-1.0.tar" in line)
    assert any(p.startswith(f"{decl.path}:{sdist_url}: sdist.url: ") and "WHEELPROOF_ALLOW_LOOPBACK=1" in p
               for p in problems), problems


def test_brackets_inside_strings_are_not_nesting(tiny):
    decl = tiny
    text = set_key(decl.path.read_text(), "", "accept-differs", '"' + "[{" * 200 + '"')
    decl.path.write_text(text)
    assert load(decl.path, tiny.declarations).accept_differs == "[{" * 200


def test_deeply_nested_array_is_refused_before_parsing(tiny):
    decl = tiny
    text = set_key(decl.path.read_text(), "", "dependencies", "[" * 5000 + "]" * 5000)
    decl.path.write_text(text)
    (problem,) = _problems(decl.path, tiny.declarations)
    line = _expected_line(text, "dependencies = [[[")
    assert problem.startswith(f"{decl.path}:{line}: dependencies: ") and "nested more than" in problem, problem


def test_deeply_nested_inline_table_is_refused_before_parsing(tiny):
    decl = tiny
    text = decl.path.read_text() + "\n[build.environment]\nX = " + "{ a = " * 5000 + "1" + " }" * 5000 + "\n"
    decl.path.write_text(text)
    (problem,) = _problems(decl.path, tiny.declarations)
    line = _expected_line(text, "X = { a")
    assert problem.startswith(f"{decl.path}:{line}: build.environment.X: ") and "nested more than" in problem


def test_two_mebibyte_file_is_refused_unparsed(tiny):
    decl = tiny
    text = decl.path.read_text() + "# " + "x" * (2 << 20) + "\n"
    decl.path.write_text(text)
    (problem,) = _problems(decl.path, tiny.declarations)
    assert re.match(rf"^{re.escape(str(decl.path))}:\d+: file size: .*more than the 1048576-byte limit", problem)
