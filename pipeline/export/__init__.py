"""Exports of a checked set: the PEP 503/691/658 tree and its IPFS forms."""
