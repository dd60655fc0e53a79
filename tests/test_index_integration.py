"""Declare and rebuild a real package from the public index (network)."""

from __future__ import annotations

import pytest

from pipeline.model.declaration import load
from pipeline.realise.declare import declare
from pipeline.realise.index import SimpleIndex
from pipeline.realise.rebuild import build
from pipeline.store.local import Store

from .conftest import needs_bwrap

pytestmark = [pytest.mark.integration, needs_bwrap]


def test_declare_and_rebuild_iniconfig_from_the_index(tmp_path):
    store = Store(tmp_path / "store")
    root = tmp_path / "declarations"
    path = declare("iniconfig==2.0.0", index=SimpleIndex(), store=store, root=root, log=lambda m: None)
    assert path == root / "in" / "iniconfig.toml"
    text = path.read_text()
    assert 'generator = "hatchling 1.12.2"' in text
    decl = load(path, root)
    assert decl.requires_python == ">=3.7"
    assert any(a.filename.startswith("hatchling-1.12.2-") for a in decl.build.inputs)  # the generator's version
    # a comment added by a reviewer survives regeneration
    path.write_text(text.replace("[sdist]", "# reviewed by a human\n[sdist]"))
    declare("iniconfig==2.0.0", index=SimpleIndex(), store=store, root=root, log=lambda m: None)
    assert "# reviewed by a human" in path.read_text()
    record = build(load(path, root), store, log=lambda m: None)
    assert record.verdict == "identical", record.summary or record.log_tail


def test_unknown_project_is_a_clear_error(tmp_path):
    from pipeline.model.errors import IndexError_

    with pytest.raises(IndexError_, match="HTTP 404"):
        declare("no-such-project-wheelproof-test==1.0", index=SimpleIndex(), store=Store(tmp_path),
                root=tmp_path, log=lambda m: None)
