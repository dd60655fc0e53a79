"""`declare NAME --with-deps` and `update` against a PEP 503 index served on 127.0.0.1 (issue 13):
the closure is declared, a release whose declaring fails falls back to an older one with a one-line
reason, hand-written overrides survive an update, and an update after which `check` fails is refused
with the file put back byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.model.declaration import load, load_all, path_for
from pipeline.policy.check import run_rules
from pipeline.policy.settle import declare_with_deps
from pipeline.policy.update import update
from pipeline.realise.declare import supported_environments
from pipeline.realise.index import SimpleIndex
from pipeline.wheel.facts import facts_for

from .conftest import build_upstream, make_sdist, needs_bwrap

pytestmark = [needs_bwrap]


class LocalIndex:
    """A PEP 503 HTML index under ``world.root/simple`` whose releases are added as a test goes."""

    def __init__(self, world):
        self.world = world
        self.files: dict[str, list[Path]] = {}

    def release(self, name: str, version: str, *, sdist: bool = True, **spec: object) -> None:
        """``spec``: the tiny backend's (``dependencies``, ``extras``, ``tag`` for a one-platform wheel)."""
        dest = self.world.dist / f"{name}-{version}"
        s = make_sdist(dest, name, version, **spec)
        wheel = build_upstream(s, dest)
        self.files.setdefault(name, []).extend([s, wheel] if sdist else [wheel])
        if not sdist:
            s.unlink()
        self._write(name)

    def _write(self, name: str) -> None:
        page = self.world.root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = [f'<a href="{self.world.url_of(p)}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}" '
                 f'data-requires-python="&gt;=3.8">{p.name}</a><br>' for p in self.files[name]]
        page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")

    @property
    def index(self) -> SimpleIndex:
        return SimpleIndex(f"{self.world.base_url}/simple/")


@pytest.fixture
def local(world):
    return LocalIndex(world)


def test_with_deps_declares_the_closure_and_lists_what_cannot_be_declared(world, local):
    local.release("tiny-lib", "1.0")
    local.release("tiny-app", "1.0", dependencies=["tiny-lib>=1", "tiny-gone; sys_platform == 'win32'",
                                                   "tiny-never; python_version < '3.0'"])
    local.release("tiny-gone", "1.0", sdist=False)   # a wheel but no sdist: not declarable
    lines: list[str] = []
    report = declare_with_deps(["tiny-app"], index=local.index, store=world.store, root=world.declarations,
                               log=lines.append)
    assert report.declared == {"tiny-lib": "1.0"}   # tiny-app removed again: its Windows closure is unmet
    assert report.failed["tiny-gone"].startswith("tiny-gone has no release with an sdist")
    assert report.failed["tiny-app"] == (
        "closure: tiny-app [cp311-windows-amd64]: requires tiny-gone, which is not in the set "
        "(requirement: tiny-gone; sys_platform == 'win32') (and 3 more)")
    assert "tiny-never" not in report.failed          # its marker holds in no supported environment
    assert not path_for("tiny-app", world.declarations).exists()
    assert load(path_for("tiny-lib", world.declarations), world.declarations).version == "1.0"
    assert any(line.startswith("[1/1] tiny-app: resolving") for line in lines)
    assert any("tiny-lib: resolving (required >=1)" in line for line in lines)


def test_update_keeps_overrides_and_is_refused_when_check_fails(world, local):
    local.release("tiny-lib", "1.0")
    local.release("tiny-app", "1.0", dependencies=["tiny-lib>=1"])
    report = declare_with_deps(["tiny-app"], index=local.index, store=world.store, root=world.declarations,
                               log=lambda m: None)
    assert report.declared == {"tiny-app": "1.0", "tiny-lib": "1.0"} and not report.failed
    lib = path_for("tiny-lib", world.declarations)
    lib.write_text(lib.read_text() + '\n[build.environment]\nTINY = { value = "1", reason = "hand-written" }\n')
    local.release("tiny-lib", "2.0")
    result = update(["tiny-lib"], index=local.index, store=world.store, root=world.declarations,
                    log=lambda m: None)
    assert [(c.name, c.old, c.new) for c in result.updated] == [("tiny-lib", "1.0", "2.0")], result.refused
    text = lib.read_text()
    assert text.startswith("# tiny-lib 2.0: written by `python -m pipeline declare`")
    assert 'TINY = { value = "1", reason = "hand-written" }' in text
    assert load(lib, world.declarations).build.environment[0].reason == "hand-written"
    assert update(["tiny-lib"], index=local.index, store=world.store, root=world.declarations,
                  log=lambda m: None).current == ["tiny-lib"]
    # 3.0 needs a project the set does not have: check fails, the update is refused, nothing changes
    local.release("tiny-lib", "3.0", dependencies=["tiny-missing>=1"])
    before = lib.read_bytes()
    refused = update(["tiny-lib"], index=local.index, store=world.store, root=world.declarations,
                     log=lambda m: None)
    assert not refused.updated and "3.0: check fails after the update" in refused.refused["tiny-lib"]
    assert "tiny-missing" in refused.refused["tiny-lib"]
    assert lib.read_bytes() == before


def check_failures(world) -> list[str]:
    """What `check` finds over the whole set (every rule, on the wheels' own facts)."""
    return [str(f) for f in run_rules(load_all(world.declarations), supported_environments(world.declarations),
                                      lambda d, w: facts_for(world.store, w.sha256, w.filename))]


def test_with_deps_propagates_unsupported_from_a_dependency_without_wheels(world, local):
    local.release("tiny-reg", "1.0", tag="py3-none-manylinux_2_17_x86_64")   # like regex on cp314-macos-x86_64
    local.release("tiny-date", "1.0", dependencies=["tiny-reg>=1"])
    local.release("tiny-top", "1.0", dependencies=["tiny-date"])
    report = declare_with_deps(["tiny-top"], index=local.index, store=world.store, root=world.declarations,
                               log=lambda m: None)
    assert check_failures(world) == []      # without settling: tiny-date, tiny-top fail closure off linux-x86_64
    assert report.declared == {"tiny-top": "1.0", "tiny-date": "1.0", "tiny-reg": "1.0"} and not report.failed
    assert report.unsupported["tiny-date"] == [
        f"{p}: needs tiny-reg, which is not available on {p} (no upstream wheel of tiny-reg 1.0 for this environment)"
        for p in ("manylinux-aarch64", "macos-arm64", "macos-x86_64", "windows-amd64")]
    assert report.unsupported["tiny-top"][0] == (
        "manylinux-aarch64: needs tiny-date, which is not available on manylinux-aarch64 (needs tiny-reg, "
        "which is not available on manylinux-aarch64)")
    date = load(path_for("tiny-date", world.declarations), world.declarations)
    assert [u.target for u in date.unsupported] == ["manylinux-aarch64", "macos-arm64", "macos-x86_64",
                                                   "windows-amd64"]
    assert check_failures(world) == [] and report.check == []


def test_with_deps_walks_and_enables_an_extra_a_dependent_requires(world, local):
    local.release("tiny-link", "1.0")
    local.release("tiny-md", "1.0", extras=["linkify", "compare"],
                  dependencies=["tiny-link>=1; extra == 'linkify'", "tiny-absent; extra == 'compare'"])
    local.release("tiny-textual", "1.0", dependencies=["tiny-md[linkify]>=1"])
    lines: list[str] = []
    report = declare_with_deps(["tiny-textual"], index=local.index, store=world.store, root=world.declarations,
                               log=lines.append)
    assert report.declared == {"tiny-textual": "1.0", "tiny-md": "1.0", "tiny-link": "1.0"}, report.failed
    assert report.extras == {"tiny-md": ["+linkify"]}
    md = path_for("tiny-md", world.declarations)
    assert load(md, world.declarations).extras == ("linkify",)
    assert '"compare": not offered: requires tiny-absent, not in the set' in md.read_text()
    assert "tiny-md 1.0: extra 'linkify' now offered: tiny-textual requires it and the set meets it" in lines
    assert check_failures(world) == [] and report.check == []


def test_with_deps_does_not_write_what_cannot_satisfy_the_rules(world, local):
    local.release("tiny-md", "1.0", extras=["linkify"], dependencies=["tiny-link; extra == 'linkify'"])
    local.release("tiny-app", "1.0", dependencies=["tiny-md[nope]"])       # an extra tiny-md does not provide
    local.release("tiny-cli", "1.0", dependencies=["tiny-app"])            # ... and a dependent of it
    report = declare_with_deps(["tiny-cli"], index=local.index, store=world.store, root=world.declarations,
                               log=lambda m: None)
    assert report.declared == {"tiny-md": "1.0"}
    assert report.failed["tiny-app"] == (
        "closure: tiny-app [cp311-macos-arm64]: tiny-md 1.0 does not offer extra 'nope', and its wheel does not "
        "provide it (requirement: tiny-md[nope]) (and 19 more)")
    assert report.failed["tiny-cli"].startswith("closure: tiny-cli [cp311-macos-arm64]: requires tiny-app, "
                                                "which is not in the set")
    assert not path_for("tiny-app", world.declarations).exists()
    assert not path_for("tiny-cli", world.declarations).exists()
    assert check_failures(world) == [] and report.check == []
