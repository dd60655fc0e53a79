"""Numeric bounds on what a declaration may ask for (docs/declarations.md, "Limits").

Every bound is checked when a declaration is loaded and again where it is used (fetch), so a
reviewed file can neither fill the disk nor hold the pipeline up.
"""

from __future__ import annotations

__all__ = [
    "MAX_ARTIFACT_SIZE",
    "MAX_DECLARATION_BYTES",
    "MAX_NESTING",
    "MAX_TEST_TIMEOUT",
    "MIN_TEST_TIMEOUT",
    "ZIP_EPOCH_MAX",
    "ZIP_EPOCH_MIN",
]

# One artifact (sdist, wheel, input): 1 GiB; the biggest wheels on PyPI stay below it.
MAX_ARTIFACT_SIZE = 1 << 30
# One declaration file, checked on the bytes before any TOML parser reads them.
MAX_DECLARATION_BYTES = 1 << 20
# Arrays/inline tables inside one another; the shipped declarations need 2.
MAX_NESTING = 32
# SOURCE_DATE_EPOCH must be a time the zip format (APPNOTE 4.4.6, MS-DOS date: years 1980..2107,
# two-second resolution) can hold: 1980-01-01T00:00:00Z .. 2107-12-31T23:59:59Z.
ZIP_EPOCH_MIN = 315532800
ZIP_EPOCH_MAX = 4354819199
# A test suite's timeout, in seconds: one second to one day.
MIN_TEST_TIMEOUT = 1
MAX_TEST_TIMEOUT = 86400
