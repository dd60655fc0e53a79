"""Presentation: the ``python -m pipeline`` commands and what dodo.py's tasks call."""
