"""Atomic file output, shared by every writer in mechsteer (cells, reports, vectors, checkpoints, plots).

A file is written under a temporary name in its target folder and renamed into place in one step, so a
crash or Ctrl-C never leaves a half-written file. mkstemp/mkdtemp create 0600/0700 entries; outputs get the
permissions a normally created file or folder would have under the current umask, so others can read them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def default_mode(directory: bool = False) -> int:
    """0o666 (file) or 0o777 (folder) under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.
    `suffix` matters to writers that pick a format from the extension (matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(target: str | Path, prefix: str) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; once the block completes, its files are made readable and it
    replaces `target` (a stale one is removed) in one rename; on failure it is removed. A reader therefore
    sees the folder complete or not at all."""
    target = Path(target)
    tmp = temp_dir(target.parent, prefix)
    try:
        yield tmp
        for f in tmp.rglob("*"):
            f.chmod(default_mode(directory=f.is_dir()))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A readable temporary folder inside `parent`, to be renamed into place once complete."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    tmp.chmod(default_mode(directory=True))
    return tmp
