"""`python -m pipeline log NAME [--diff]` (issue 13): the stored build log is sandbox output, so hostile;
it is printed with control characters escaped, and failures point to it."""

from __future__ import annotations

from pipeline.realise.logs import printable
from pipeline.realise.rebuild import build

from ..conftest import needs_bwrap

ANSI_HOOK = """
import sys
sys.stdout.buffer.write("before\\x1b[2J\\x1b]0;pwned\\x07\\rover\\u202eevil\\n".encode())
sys.stdout.flush()
sys.exit("hook failed on purpose")
"""


def test_printable_escapes_every_control_character_but_newline_and_tab():
    assert printable("a\x1b[31mb\rc\x07d\u202ee\tf\ng") == "a\\x1b[31mb\\rc\\x07d\\u202ee\tf\ng"


@needs_bwrap
def test_a_failed_build_points_to_its_log_and_the_log_is_printed_defused(world):
    decl = world.declare_tiny(hook=ANSI_HOOK)
    result = world.doit("build:tiny")
    assert result.returncode != 0
    assert "full log: python -m pipeline log tiny" in result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    shown = world.cli("log", "tiny")
    assert shown.returncode == 0, shown.stderr
    assert f"== build log of tiny {decl.version}" in shown.stdout and ": failed ==" in shown.stdout
    assert "hook failed on purpose" in shown.stdout
    # (the runner's capture already turned the carriage return into a line break)
    assert "before\\x1b[2J\\x1b]0;pwned\\x07" in shown.stdout and "over\\u202eevil" in shown.stdout
    assert not any(c in shown.stdout for c in "\x1b\x07\r\u202e")


@needs_bwrap
def test_log_diff_shows_the_comparison_and_unknown_or_unbuilt_names_are_errors(world):
    decl = world.declare_tiny(mutate_upstream=True)
    unbuilt = world.cli("log", "tiny")
    assert unbuilt.returncode != 0 and "has not been built; run `doit build:tiny`" in unbuilt.stderr
    assert build(decl, world.store, log=lambda m: None).verdict == "differs"
    shown = world.cli("log", "tiny", "--diff")
    assert shown.returncode == 0, shown.stderr
    assert "other contents: tiny.py" in shown.stdout and "-X = 2" in shown.stdout and "+X = 1" in shown.stdout
    full = world.cli("log", "tiny")
    assert "== primary build ==" in full.stdout or "== " in full.stdout
    missing = world.cli("log", "nope")
    assert missing.returncode != 0 and "no declaration named 'nope'" in missing.stderr
    no_tests = world.cli("log", "tiny", "--test")
    assert no_tests.returncode != 0 and "has no [test] table" in no_tests.stderr
