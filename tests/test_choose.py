"""Release and wheel choice for `declare` (pipeline/realise/choose.py), and the backend warnings
(pipeline/realise/backends.py): no network, a fake index."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet

from pipeline.model import environments
from pipeline.model.errors import IndexError_
from pipeline.realise.backends import sandbox_cannot_run
from pipeline.realise.choose import choose_release, select_wheels, serves
from pipeline.realise.index import IndexFile

ENVS = environments.load()
BUILD = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"   # installs on the build machine


def f(filename: str, requires_python: str | None = None) -> IndexFile:
    return IndexFile(filename, f"https://files.example.org/{filename}", "a" * 64, 10, requires_python, False, False)


class FakeIndex:
    base_url = "https://index.example.org/simple/"

    def __init__(self, files: dict[str, list[IndexFile]]):
        self._files = files

    def files(self, name: str) -> list[IndexFile]:
        return self._files[name]


def full_release(v: str) -> list[IndexFile]:
    """An sdist and one wheel per supported environment, plus wheels that serve none."""
    out = [f(f"bin-{v}.tar.gz")]
    for py in ("311", "312", "313", "314"):
        out += [f(f"bin-{v}-cp{py}-cp{py}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-macosx_11_0_arm64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-macosx_10_13_x86_64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-win_amd64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-musllinux_1_2_riscv64.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-ios_13_0_arm64_iphoneos.whl"),
                f(f"bin-{v}-cp{py}-cp{py}-win32.whl")]
    return out


def test_only_wheels_serving_a_supported_environment_one_per_environment():
    files = full_release("2.0")
    chosen, uncovered, ignored = select_wheels([x for x in files if x.filename.endswith(".whl")], ENVS, None)
    assert len(chosen) == 20 and uncovered == [] and ignored == 12
    for env in ENVS:
        assert sum(1 for w in chosen if env.name in serves(w.filename, ENVS)) == 1
    assert not any("riscv64" in w.filename or "ios" in w.filename or "win32" in w.filename for w in chosen)


def test_a_pure_wheel_wins_over_compiled_ones_and_abi3_covers_later_pythons():
    pure = f("p-1.0-py3-none-any.whl")
    compiled = f("p-1.0-cp311-cp311-win_amd64.whl")
    assert select_wheels([compiled, pure], ENVS, None)[0] == [pure]
    abi3 = f("q-1.0-cp311-abi3-win_amd64.whl")
    cp313 = f("q-1.0-cp313-cp313-win_amd64.whl")
    chosen, uncovered, _ = select_wheels([abi3, cp313], ENVS, None)
    assert chosen == [abi3]   # serves cp311..cp314 on Windows; the cp313 one would install beside it
    assert not any(u.startswith("cp3") and u.endswith("windows-amd64") for u in uncovered)


def test_requires_python_narrows_the_environments_to_cover():
    wheels = [f(f"r-1.0-cp{py}-cp{py}-win_amd64.whl") for py in ("313", "314")]
    _, uncovered, _ = select_wheels(wheels, ENVS, ">=3.13")
    assert "cp313-windows-amd64" not in uncovered and "cp311-windows-amd64" not in uncovered
    _, uncovered, _ = select_wheels(wheels, ENVS, None)
    assert "cp311-windows-amd64" in uncovered


def test_newest_release_that_covers_every_environment_with_the_fallback_explained():
    newest = [x for x in full_release("3.0") if "cp314" not in x.filename]   # no cp314 wheels yet
    index = FakeIndex({"bin": newest + full_release("2.0") + [f("bin-4.0rc1.tar.gz")]})
    release, notes = choose_release(index, "bin", ENVS)  # type: ignore[arg-type]
    assert release.version == "2.0" and len(release.wheels) == 20
    assert len(notes) == 1 and notes[0].startswith("bin 3.0: passed over: no wheel for cp314-")


def test_skip_and_dependents_specifiers_are_respected():
    index = FakeIndex({"bin": full_release("3.0") + full_release("2.0")})
    assert choose_release(index, "bin", ENVS, skip=["3.0"])[0].version == "2.0"  # type: ignore[arg-type]
    assert choose_release(index, "bin", ENVS, want=SpecifierSet("<3"))[0].version == "2.0"  # type: ignore[arg-type]
    with pytest.raises(IndexError_, match="no release other than 3.0, 2.0"):
        choose_release(index, "bin", ENVS, skip=["3.0", "2.0"])  # type: ignore[arg-type]


def test_pre_releases_only_when_a_dependent_names_one_or_nothing_else_fits():
    """PEP 440 (packaging's SpecifierSet.filter): a pre-release is taken when the specifier names one
    explicitly, or when no final release fits; otherwise the newest final release wins."""
    index = FakeIndex({"bin": full_release("2.0b1") + full_release("1.0")})
    assert choose_release(index, "bin", ENVS)[0].version == "1.0"  # type: ignore[arg-type]
    assert choose_release(index, "bin", ENVS, want=SpecifierSet(">=0.5"))[0].version == "1.0"  # type: ignore[arg-type]
    assert choose_release(index, "bin", ENVS, want=SpecifierSet("==2.0b1"))[0].version == "2.0b1"  # type: ignore[arg-type]
    only_pre = FakeIndex({"bin": full_release("0.66b2")})
    assert choose_release(only_pre, "bin", ENVS)[0].version == "0.66b2"  # type: ignore[arg-type]


def test_a_release_with_an_invalid_requires_python_is_passed_over():
    """">=3.5.*" is not PEP 440 (packaging 22+ refuses it): that release is skipped, not the project."""
    bad = [f(x.filename, ">=3.5.*") for x in full_release("3.0")]
    index = FakeIndex({"bin": bad + full_release("2.0")})
    assert choose_release(index, "bin", ENVS)[0].version == "2.0"  # type: ignore[arg-type]


def test_no_release_covering_everything_takes_the_newest_and_says_what_it_lacks():
    only_linux = [f("lx-1.0.tar.gz"), f(f"lx-1.0-{BUILD}.whl")]
    index = FakeIndex({"lx": only_linux})
    release, notes = choose_release(index, "lx", ENVS)  # type: ignore[arg-type]
    assert release.version == "1.0" and "cp311-manylinux-aarch64" in release.uncovered
    assert "none of the newest 1 releases covers every environment" in notes[0]


def test_backend_warnings_name_the_missing_tool(tmp_path):
    (tmp_path / "cc").write_text("")
    (tmp_path / "cc").chmod(0o755)
    warnings = sandbox_cannot_run("maturin", ["maturin>=1,<2"], str(tmp_path))
    assert len(warnings) == 1 and "maturin needs a Rust toolchain" in warnings[0] and "cargo" in warnings[0]
    assert sandbox_cannot_run("setuptools.build_meta", ["setuptools", "cython"], str(tmp_path)) == []
    assert "needs a C compiler" in sandbox_cannot_run("mesonpy", [], str(tmp_path / "none"))[0]
