"""Realising derivations: fixed-output fetch, the sandbox, rebuilds, test runs, and declaring from an index."""
