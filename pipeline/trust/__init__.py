"""Signatures, the transparency log and releases."""
