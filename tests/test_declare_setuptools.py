"""``declare`` bounds setuptools by what upstream's metadata shows it wrote (issue 14, "older setuptools"):
each marker, the tightest bound, the generators it applies to, and the comment it leaves."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from pipeline.realise.declare import bounds_comment, setuptools_bounds
from pipeline.wheel.setuptools_era import (
    MetadataEvidence,
    infer_setuptools_bounds,
    read_metadata_evidence,
    tightest,
)

NEW = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nLicense-File: LICENSE\n\nA description.\n"


def bounds(metadata: str = NEW, pkg_info: str = "", dist_info: tuple[str, ...] = ("LICENSE", "METADATA")) -> list[str]:
    return [b.requirement for b in infer_setuptools_bounds(MetadataEvidence(metadata, dist_info, pkg_info))]


def test_metadata_a_current_setuptools_writes_bounds_nothing():
    assert bounds(pkg_info=NEW) == []


def test_platform_unknown_means_before_62_2():
    assert bounds(NEW.replace("\n\n", "\nPlatform: UNKNOWN\n\n")) == ["setuptools<62.2"]


def test_two_blank_lines_after_the_description_mean_before_62_2():
    assert bounds(NEW + "\n\n") == ["setuptools<62.2"]
    assert bounds(NEW + "\n") == []  # one blank line: a description that ends with one


def test_a_description_header_in_the_sdist_means_before_57():
    assert bounds(pkg_info="Metadata-Version: 2.1\nName: demo\nDescription: A description.\n\n") == ["setuptools<57"]


def test_no_license_file_field_beside_a_copied_license_means_before_57():
    no_field = NEW.replace("License-File: LICENSE\n", "")
    assert bounds(no_field) == ["setuptools<57"]
    assert bounds(no_field, dist_info=("METADATA", "WHEEL")) == []  # no license file: nothing to write


def test_an_egg_info_name_with_dashes_for_underscores_means_before_69_0_3():
    wheel = NEW.replace("Name: demo", "Name: nest-asyncio")
    assert bounds(wheel, pkg_info="Metadata-Version: 2.1\nName: nest_asyncio\n\n") == ["setuptools<69.0.3"]
    assert bounds(wheel, pkg_info="Metadata-Version: 2.1\nName: nest-asyncio\n\n") == []
    assert bounds(NEW.replace("Name: demo", "Name: other"), pkg_info="Name: nest_asyncio\n\n") == []


def test_the_tightest_bound_is_kept_with_every_reason_for_it():
    old = NEW.replace("License-File: LICENSE\n", "Platform: UNKNOWN\n") + "\n\n"
    found = infer_setuptools_bounds(MetadataEvidence(old, ("LICENSE",), "Name: demo\nDescription: x\n\n"))
    assert sorted({b.below for b in found}) == ["57", "62.2"]
    kept = tightest(found)
    assert [b.requirement for b in kept] == ["setuptools<57", "setuptools<57"]
    comment = bounds_comment(kept)
    assert comment.startswith("inputs: the newest setuptools as of the upload with setuptools<57: ")
    assert "Description header" in comment and "License-File" in comment and "\n" not in comment


def archives(tmp_path: Path, metadata: str, pkg_info: str, generator: str) -> tuple[Path, Path]:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo.py", "")
        zf.writestr("demo-1.0.dist-info/METADATA", metadata)
        zf.writestr("demo-1.0.dist-info/LICENSE", "MIT")
        zf.writestr("demo-1.0.dist-info/WHEEL", f"Wheel-Version: 1.0\nGenerator: {generator}\n")
    sdist = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        data = pkg_info.encode()
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return wheel, sdist


def test_declare_reads_the_bounds_from_the_archives_for_setuptools_wheels_only(tmp_path):
    old = NEW.replace("License-File: LICENSE\n", "")
    wheel, sdist = archives(tmp_path, old, "Metadata-Version: 2.1\nName: demo\nDescription: x\n\n",
                            "bdist_wheel (0.37.1)")
    evidence = read_metadata_evidence(wheel, sdist, sdist.name)
    assert evidence.dist_info_files == ("METADATA", "LICENSE", "WHEEL") and "Description: x" in evidence.pkg_info
    found = setuptools_bounds("bdist_wheel (0.37.1)", ["setuptools>=40.8.0"], wheel, sdist, sdist.name)
    assert {b.requirement for b in found} == {"setuptools<57"}
    assert setuptools_bounds("flit 3.9.0", ["flit_core"], wheel, sdist, sdist.name) == []
    assert setuptools_bounds("bdist_wheel (0.37.1)", ["hatchling"], wheel, sdist, sdist.name) == []


def test_build_inputs_step_down_one_line_each_and_drop_the_date_last(monkeypatch):
    """verboselogs 1.7 (2017): nothing uploaded before it satisfies its backend's default setuptools>=40.8.0,
    so the pin and the bound are kept and only the date goes; each step down is one line."""
    from pipeline.realise import declare
    from pipeline.wheel.setuptools_era import SetuptoolsBound

    seen: list[tuple[tuple[str, ...], str | None]] = []

    def resolve(requirements, index, before):
        seen.append((tuple(requirements), before))
        if before is not None:
            raise declare.IndexError_(f"cannot resolve build requirements {requirements}: ERROR: No matching "
                                      "distribution found for setuptools>=40.8.0")
        return [f"resolved {requirements}"]

    monkeypatch.setattr(declare, "resolve", resolve)
    lines: list[str] = []
    bound = SetuptoolsBound("57", "PKG-INFO carries a Description header")
    resolved, pin, bounds, before = declare.resolve_build_inputs(
        ["setuptools>=40.8.0"], ["wheel==0.29.0"], [bound], index=None, before="2017-08-07T19:46:15Z",
        log=lines.append)
    assert seen == [(("setuptools>=40.8.0", "wheel==0.29.0", "setuptools<57"), "2017-08-07T19:46:15Z"),
                    (("setuptools>=40.8.0", "wheel==0.29.0"), "2017-08-07T19:46:15Z"),
                    (("setuptools>=40.8.0",), "2017-08-07T19:46:15Z"),
                    (("setuptools>=40.8.0", "wheel==0.29.0", "setuptools<57"), None)]
    assert (pin, bounds, before) == (["wheel==0.29.0"], [bound], None)
    assert resolved == ["resolved ['setuptools>=40.8.0', 'wheel==0.29.0', 'setuptools<57']"]
    assert [line.rsplit("; ", 1)[1] for line in lines] == [
        "resolving without the setuptools bound", "resolving without the generator pin",
        "resolving with the newest releases, not those as of 2017-08-07T19:46:15Z"]
    assert all("\n" not in line and "from versions" not in line for line in lines)
    assert "inputs as of" not in declare.bounds_comment(bounds, dated=False)
    assert declare.bounds_comment(bounds, dated=False).startswith("inputs: the newest setuptools with setuptools<57")


def test_pip_reason_is_one_line_without_the_version_list():
    from pipeline.realise.declare import pip_reason

    stderr = ("ERROR: Could not find a version that satisfies the requirement setuptools>=40.8.0 (from versions: "
              "0.9.8, 1.1.6, 36.2.7)\nERROR: No matching distribution found for setuptools>=40.8.0\n")
    assert pip_reason(stderr) == "ERROR: No matching distribution found for setuptools>=40.8.0"
    assert pip_reason("") == "pip gave no reason"
