"""A hostile farm worker for the tests: ``python -m tests.hostile.forging_worker worker ...`` runs the real
worker, but every wheel it returns has one byte flipped (under the wheel's true name)."""

from __future__ import annotations

import dataclasses
import sys

from pipeline.cli.main import main
from pipeline.farm import worker


def _forge(result: worker.ActionResult) -> worker.ActionResult:
    blobs = {d: (b[:-1] + bytes([b[-1] ^ 1]) if b[:2] == b"PK" else b) for d, b in result.blobs.items()}
    return dataclasses.replace(result, blobs=blobs)


_honest = worker.WheelproofPlugin._result
worker.WheelproofPlugin._result = lambda self, *a: _forge(_honest(self, *a))  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
