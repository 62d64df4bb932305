"""sha256 of files, memoised so that a 15 GB model is read once, not on every `plan`.

Every content hash of a file in mechsteer (model weights and tokenizer files, vector files, local benchmark
data, the embedded model's GGUF, the inputs of a bias-compiled checkpoint) goes through `sha256_file`. A
result is remembered in this process and on disk (`<MECHSTEER_CACHE or ~/.cache/mechsteer>/file_hashes.json`)
under the file's resolved path, size, inode, mtime and ctime (in nanoseconds): rewriting a file in place
changes its ctime even when its size is the same and its mtime is set back, so a memo entry never outlives
the content it describes. Reading the memo is one small JSON file; a damaged or missing memo only costs the
hashing again. Concurrent writers may drop each other's new entries (each write is atomic), never corrupt
the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mechsteer.atomic import atomic_write_text

CHUNK = 1 << 22
MEMO_NAME = "file_hashes.json"
DISK_MEMO_MIN_BYTES = 16 << 20
"""Smaller files are remembered in this process only: hashing them costs less than rewriting the memo."""

_memo: dict[str, str] = {}
_loaded_from: Path | None = None


def memo_path() -> Path:
    """The on-disk memo (in the folder `mechsteer.models.embedded.cache_root` also uses)."""
    return Path(os.environ.get("MECHSTEER_CACHE", Path.home() / ".cache" / "mechsteer")) / MEMO_NAME


def _key(path: Path) -> tuple[str, os.stat_result]:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}|{st.st_ctime_ns}", st


def _load_memo() -> None:
    global _loaded_from
    where = memo_path()
    if _loaded_from == where:
        return
    _loaded_from = where
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        _memo.update({k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)})


def _current(key: str) -> bool:
    """Whether a memo key still describes the file at its path (entries of deleted or changed files go)."""
    path = key.rsplit("|", 4)[0]
    try:
        return _key(Path(path))[0] == key
    except OSError:
        return False


def _save_memo(key: str, digest: str) -> None:
    where = memo_path()
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data = {k: v for k, v in data.items() if isinstance(k, str) and _current(k)}
    data[key] = digest
    try:
        atomic_write_text(where, json.dumps(data, indent=0, sort_keys=True))
    except Exception:  # noqa: BLE001 - a read-only cache folder only costs hashing again next time
        pass


def hash_bytes_of(path: Path) -> str:
    """sha256 hex digest of a file's bytes, read in 4 MiB blocks (no memo)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's content, memoised by (path, size, inode, mtime, ctime)."""
    path = Path(path)
    _load_memo()
    key, st = _key(path)
    digest = _memo.get(key)
    if digest is None:
        digest = hash_bytes_of(path)
        if _key(path)[0] == key:  # unchanged while it was read: safe to remember
            _memo[key] = digest
            if st.st_size >= DISK_MEMO_MIN_BYTES:
                _save_memo(key, digest)
    return digest


def forget() -> None:
    """Drop this process's memo (tests; the on-disk memo is read again on the next call)."""
    global _loaded_from
    _memo.clear()
    _loaded_from = None
