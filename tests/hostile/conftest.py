"""Shared helpers for the hostile tests: a hook run by the tiny backend inside the sandbox."""

from __future__ import annotations

import pytest

from tests.conftest import world  # noqa: F401  (the fixture, for the tests here)


def limits_table(reason: str = "hostile test: small limits", **limits: object) -> str:
    lines = [f'reason = "{reason}"'] + [f"{k} = {v!r}".replace("'", '"') for k, v in limits.items()]
    return "\n[build.limits]\n" + "\n".join(lines) + "\n"


@pytest.fixture
def quiet():
    return lambda message: None
