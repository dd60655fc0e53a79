"""Where the reviewed data lives: the declarations and the builder programs (no imports beyond os)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DECLARATIONS_ENV", "DECLARATIONS_DIR", "NON_DECLARATIONS", "BUILDERS_DIR", "REPO_DECLARATIONS_DIR"]

_REPO = Path(__file__).resolve().parents[2]
DECLARATIONS_ENV = "WHEELPROOF_DECLARATIONS"
DECLARATIONS_DIR = Path(os.environ.get(DECLARATIONS_ENV) or _REPO / "declarations")
# reviewed data beside the shards that is not a project
NON_DECLARATIONS = frozenset({"environments.toml", "conda-names.toml"})
BUILDERS_DIR = _REPO / "builders"
REPO_DECLARATIONS_DIR = _REPO / "declarations"  # the shipped set (its environments.toml is the default)
