"""Helpers for the hostile tests (the ``world`` fixture comes from tests/conftest.py)."""

from __future__ import annotations


def limits_table(reason: str = "hostile test: small limits", **limits: object) -> str:
    """A ``[build.limits]`` table to append to a tiny declaration."""
    lines = [f'reason = "{reason}"'] + [f"{k} = {v!r}".replace("'", '"') for k, v in limits.items()]
    return "\n[build.limits]\n" + "\n".join(lines) + "\n"
