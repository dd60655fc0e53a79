"""The repository's rules: what a consistent, publishable set is."""
