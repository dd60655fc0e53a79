"""A declaration cannot lift the sandbox's limits silently or without bound."""

from __future__ import annotations

import pytest

from pipeline.model.errors import DeclarationError
from pipeline.model.limits import DEFAULT_LIMITS, parse_limits


def problems(table: object) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    parse_limits(table, lambda path, message: out.append((path, message)))
    return out


def test_raising_a_limit_needs_a_reason():
    assert problems({"memory": "8GiB"}) == [(("build", "limits", "reason"),
                                            'a table that changes limits needs a reason = "…" saying why')]


@pytest.mark.parametrize("table,field,message", [
    ({"reason": "r", "memory": "lots"}, "memory",
     "expected a size (bytes, or a string such as \"512MiB\"), got 'lots'"),
    ({"reason": "r", "processes": 100_000}, "processes", "must be between 1 and 4096, got 100000"),
    ({"reason": "r", "processes": 0}, "processes", "must be between 1 and 4096, got 0"),
    ({"reason": "r", "processes": True}, "processes", "expected an integer, got True"),
    ({"reason": "r", "network": 1}, "network", "unknown limit (allowed: cpu-seconds, extracted, file-size, "
     "log-kept, memory, output, processes, ratio, reason, result-size, wheel-size, wheel-unpacked, workspace)"),
])
def test_bad_limits_name_the_field(table, field, message):
    assert problems(table) == [(("build", "limits", field), message)]


def test_a_reasoned_table_sets_limits():
    from pipeline.model.limits import parse_limits as parse

    limits = parse({"reason": "big C++ build", "memory": "8GiB", "cpu-seconds": 3600}, lambda *a: None)
    assert (limits.memory, limits.cpu_seconds, limits.processes) == (8 << 30, 3600, DEFAULT_LIMITS.processes)


def test_declaration_reports_the_line(world):
    with pytest.raises(DeclarationError, match=r"tiny\.toml:\d+: build\.limits\.memory: expected a size"):
        world.declare_tiny(test_table='\n[build.limits]\nreason = "x"\nmemory = "lots"\n')
