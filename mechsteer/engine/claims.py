"""Per-cell claims: several runs may share one output folder (two terminals, Ray workers on one file system)
and every cell is still computed once.

A claim is an exclusive OS advisory lock (`flock`) on `cells/.locks/<hash>.lock`. Only the holder of a
cell's claim computes the cell, writes it, or removes its temporary folders; the OS drops the lock when the
holder's file is closed or its process dies (also on SIGKILL), so a claim never outlives a crashed run and no
stale-lock timeout is needed. Lock files are never deleted (deleting one another process holds would let a
third process lock a fresh file of the same name).

`claimed` is the scheduling loop: a first pass takes every free claim without waiting and skips cells another
run is computing; a second pass waits for those and computes only the ones still missing afterwards (the
other run may have died or failed). flock works on local file systems and on NFS (Linux emulates it with
POSIX locks there); without `fcntl` (Windows) claims always succeed and runs must not share a folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("mechsteer.engine")

LOCK_DIR = ".locks"
"""Folder (under the cell store's root) holding one lock file per claimed cell."""


class CellFolders(Protocol):
    """What `claimed` needs of a cell store (`mechsteer.engine.store.CellStore` is one). Claims sit below the
    store, which uses them to guard its own clean-up, so they name no store class."""

    root: Path

    def dir(self, h: str) -> Path:
        """The folder of cell `h`."""

    def is_done(self, h: str) -> bool:
        """Whether cell `h` is recorded completely."""

    def damage(self, h: str) -> str | None:
        """What is wrong with cell `h`'s folder, or None."""

    def recover(self, h: str) -> int:
        """Clean up what a crashed writer of cell `h` left (only under its claim)."""


class Claim:
    """The exclusive claim on one cell (a context manager that releases it). `acquire(blocking=False)`
    returns False when another process holds it."""

    def __init__(self, root: Path, h: str):
        self.path = Path(root) / LOCK_DIR / f"{h}.lock"
        self._fd: int | None = None

    def acquire(self, blocking: bool) -> bool:
        """Take the lock (waiting for it when `blocking`); False when another process holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor of the open file drops the flock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _stamp(store: CellFolders, h: str) -> tuple[int, int] | None:
    """Identity of a cell's record file (inode, mtime): a cell rewritten by another run gets a new one."""
    try:
        st = (store.dir(h) / "cell.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def claimed(
    store: CellFolders,
    cells: Iterable,
    force: bool = False,
    *,
    needs_run: Callable[[str], bool] | None = None,
    reused: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> Iterator:
    """Yield the cells (objects with a `.hash`) this process must compute, holding each one's claim until the
    caller asks for the next cell (or stops iterating). A complete cell is computed again when
    `needs_run(hash)` says so (evaluated under the claim; the engine passes "recorded by other code").

    Under the claim, leftovers of a crashed writer of that cell are cleaned up first (`CellStore.recover`); a
    damaged cell folder is reported and computed again. A cell that turns out complete (another run finished
    it) is passed to `reused` instead of being yielded. With `force`, a cell is computed again unless another
    run rewrote it after this call started (so two forced runs still compute it once). `notify` gets a line
    when this run starts waiting for cells other runs are computing."""
    cells = list(cells)
    before = {c.hash: _stamp(store, c.hash) for c in cells} if force else {}

    def must_compute(h: str) -> bool:
        store.recover(h)
        damage = store.damage(h)
        if damage is not None:
            log.warning("cell %s is damaged (%s): computing it again", store.dir(h), damage)
            return True
        if not store.is_done(h):
            return True
        if needs_run is not None and needs_run(h):
            return True
        return force and _stamp(store, h) == before[h]

    deferred = []
    for blocking, todo in ((False, cells), (True, deferred)):
        if blocking and deferred and notify is not None:
            notify(f"waiting for {len(deferred)} cell(s) another run is computing")
        for c in todo:
            claim = Claim(store.root, c.hash)
            try:
                if not claim.acquire(blocking=blocking):
                    deferred.append(c)
                    continue
                if must_compute(c.hash):
                    yield c
                elif reused is not None:
                    reused(c.hash)
            finally:
                claim.release()
