"""Wheel files: facts read from a wheel (PEP 427/658 metadata, RECORD) and wheel comparison."""
