"""Shared bits for benchmark scripts: run from the repository root with the project's venv."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DOIT = [sys.executable, "-m", "doit"]
