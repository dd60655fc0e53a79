"""Verifying a release the way a client does: with a key it trusts from elsewhere and the newest
checkpoint it has seen before, never with anything the release directory says about itself.

- The trusted key comes from ``--public-key FILE``, ``$WHEELPROOF_TRUSTED_KEY`` or
  ``~/.config/wheelproof/trusted.pub``; a key file inside the release directory is refused (whoever can
  write that directory could re-sign everything).
- The verifier's state (``--state FILE``, ``$WHEELPROOF_TRUSTED_CHECKPOINT`` or
  ``~/.config/wheelproof/trusted-checkpoint``) pins the newest signed checkpoint seen; the log must
  extend it (TUF specification §5 rollback/freeze attacks; RFC 6962 §2.1.2 consistency). It is
  updated only after every check passed.
- The release must be in the log: its entry (RFC 6962 leaf) at the index its manifest records, after
  exactly the tree its manifest says it extends, followed by its wheels' entries; the manifest's file
  name must match its signed sequence and root; ``latest`` must name the log's newest release.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.trust import tlog
from pipeline.trust.checkpoint import Checkpoint, HistoryError, ReleaseError, require_extends
from pipeline.trust.pinned import PinnedCheckpoint
from pipeline.trust.release import (
    LoggedRelease,
    Releases,
    logged_releases,
    manifest_name,
    release_entry,
    verify_release,
    wheel_entry,
)
from pipeline.trust.signing import PublicKey, SignatureError

__all__ = ["TRUSTED_CHECKPOINT_ENV", "TRUSTED_KEY_ENV", "VerifiedRelease", "config_dir", "default_state",
           "trusted_key", "verify_logged_release"]

TRUSTED_KEY_ENV = "WHEELPROOF_TRUSTED_KEY"
TRUSTED_CHECKPOINT_ENV = "WHEELPROOF_TRUSTED_CHECKPOINT"


def config_dir() -> Path:
    return Path("~/.config/wheelproof").expanduser()


def default_state() -> Path:
    return Path(os.environ.get(TRUSTED_CHECKPOINT_ENV) or config_dir() / "trusted-checkpoint")


def trusted_key(explicit: str | None, release_root: Path) -> tuple[PublicKey, Path]:
    """The key a verifier trusts, from outside the release directory."""
    path = Path(explicit or os.environ.get(TRUSTED_KEY_ENV) or config_dir() / "trusted.pub")
    if not path.is_file():
        raise ReleaseError(f"no trusted release key at {path}: pass --public-key FILE, set {TRUSTED_KEY_ENV}, or "
                           f"copy the publisher's key (obtained out of band, never from the release directory) "
                           f"to {config_dir() / 'trusted.pub'}")
    if path.resolve().is_relative_to(release_root.resolve()):
        raise ReleaseError(f"refusing the key {path}: it is inside the release directory {release_root}, which "
                           "anyone who can write it could have re-signed; use a key obtained out of band")
    try:
        return PublicKey.parse(path.read_text()), path
    except (SignatureError, UnicodeDecodeError) as e:
        raise ReleaseError(f"{path}: {e}") from None


@dataclass(frozen=True)
class VerifiedRelease:
    manifest: dict[str, Any]
    logged: LoggedRelease
    checkpoint: Checkpoint
    pinned: Checkpoint | None
    newest: LoggedRelease


def verify_logged_release(rel: Releases, manifest_path: Path, signature_path: Path, car_path: Path,
                          public: PublicKey, state: PinnedCheckpoint, is_latest: bool,
                          log: Callable[[str], None] = print) -> VerifiedRelease:
    """Every check, then (only then) move the verifier's pinned checkpoint forward."""
    pinned = state.load(public, rel.origin)
    cp, entries = rel.verified_log(public)
    if pinned is not None:
        require_extends(pinned, state.path, cp, entries, rel.log)
    if cp is None:
        raise HistoryError(f"there is no log: {rel.log / 'checkpoint'} is missing (deleted?)")
    releases = logged_releases(entries)
    lines: list[str] = []
    manifest = verify_release(manifest_path, signature_path, car_path, public, log=lines.append)
    data = manifest_path.read_bytes()
    sequence, root = manifest["sequence"], manifest["root"]
    if manifest_path.name != manifest_name(sequence, root):
        raise ReleaseError(f"{manifest_path.name}: the signed manifest is release {sequence} {root} "
                           f"({manifest_name(sequence, root)}): a manifest replayed under another name")
    logged = _find(releases, entries, manifest, hashlib.sha256(data).hexdigest(), cp, manifest_path)
    newest = releases[-1]
    if is_latest and logged != newest:
        raise HistoryError(f"{rel.root / 'latest'} names release {sequence}, but the log's newest release is "
                           f"{newest.sequence} ({newest.root}): a stale or rolled-back pointer")
    note = (rel.log / "checkpoint").read_text()
    if pinned is None or cp.size > pinned.size:
        state.save(note)
    for line in lines:
        log(line)
    log(f"  log        entry {logged.index} of {cp.size} in {rel.log} ({rel.origin})"
        + ("" if logged == newest else f"; not the newest: release {newest.sequence} is"))
    if pinned is None:
        log(f"  history    first use of {state.path}: the log's checkpoint (size {cp.size}) is trusted from now on")
    else:
        log(f"  history    extends the checkpoint of size {pinned.size} seen before; {state.path} now at size "
            f"{max(cp.size, pinned.size)}")
    return VerifiedRelease(manifest, logged, cp, pinned, newest)


def _find(releases: list[LoggedRelease], entries: list[bytes], manifest: dict[str, Any], sha: str,
          cp: Checkpoint, path: Path) -> LoggedRelease:
    """The log entry of this manifest, where the manifest says, with its wheels after it."""
    expected = release_entry(manifest, sha)
    found = [r for r in releases if entries[r.index] == expected]
    if not found:
        raise HistoryError(f"{path.name}: release {manifest['sequence']} is not in the log (size {cp.size}): it was "
                           "never published, or the log was rolled back")
    logged = found[0]
    extends = manifest.get("log")
    if extends is not None:
        if extends.get("size") != logged.index or tlog.root(
                [tlog.leaf_hash(e) for e in entries[:logged.index]]) != base64.b64decode(extends.get("root", "")):
            raise HistoryError(f"{path.name}: the log does not hold release {manifest['sequence']} right after the "
                               f"tree of size {extends.get('size')} its manifest extends (history was rewritten)")
    wheels = [wheel_entry(w["filename"], w["sha256"], manifest["root"]) for w in manifest["wheels"]]
    if entries[logged.index + 1:logged.index + 1 + len(wheels)] != wheels:
        raise HistoryError(f"{path.name}: the log's entries after release {manifest['sequence']} are not its "
                           "wheels")
    return logged
