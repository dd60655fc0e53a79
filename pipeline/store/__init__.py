"""The content-addressed store: objects, refs, locks, fsck and gc."""
