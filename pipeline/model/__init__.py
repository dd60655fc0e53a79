"""The data model: declarations, supported environments, derivations and typed records."""
