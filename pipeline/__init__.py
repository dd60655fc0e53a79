"""Wheelproof: declarations in, a proven, checked, signed wheel repository on IPFS out."""

__version__ = "0.1.0"
