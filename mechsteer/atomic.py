"""Atomic file output, shared by every writer in mechsteer (cells, reports, vectors, checkpoints, plots).

A file is written under a temporary name in its target folder and renamed into place in one step, so a
crash or Ctrl-C never leaves a half-written file; a folder replaces an existing one without a moment in which
neither exists (`replace_dir`). A full disk becomes one OutputError line naming what was being written.

Permissions: temporary files and folders are created with the ordinary modes (0666 / 0777, reduced by the
umask and the folder's default ACL, as any normally created file), not mkstemp's 0600/0700, so outputs are as
readable as the user's other files. The process umask is never changed (reading it with `os.umask` means
setting it, which races with every other thread creating files): `current_umask` reads it from
`/proc/self/status`, or from the mode a probe file gets.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import glob
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mechsteer.errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it: the `Umask:` line of /proc/self/status (Linux), else
    what the umask removed from a probe file created with mode 0777 in the temporary folder."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    probe = os.path.join(tempfile.gettempdir(), f".mechsteer-umask-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777)
    try:
        return 0o777 & ~os.fstat(fd).st_mode
    finally:
        os.close(fd)
        os.unlink(probe)


def default_mode(directory: bool = False) -> int:
    """0o666 (file) or 0o777 (folder) under the current umask (which is read, never changed)."""
    return (0o777 if directory else 0o666) & ~current_umask()


def _new_temp_file(parent: Path, prefix: str, suffix: str) -> str:
    """Create an empty file with a unique name in `parent`, with the ordinary mode (0666 less the umask)."""
    for _ in range(100):
        name = os.path.join(parent, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed.
    `suffix` matters to writers that pick a format from the extension (matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path.parent, f".{path.name}.", suffix)
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as e:
            _raise_if_disk_full(e, path)
            raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename, so a reader never sees half a file."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` as UTF-8 to `path` atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_dir(target: str | Path, prefix: str) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; once the block completes, its files are made readable and it
    takes the place of `target` in one step; on failure it is removed. A reader therefore sees the folder
    complete or not at all, and an existing `target` (a re-run with --force) is never absent: see
    `replace_dir`. A full disk or quota while writing becomes an OutputError naming the folder."""
    target = Path(target)
    recover_dir(target)
    tmp = temp_dir(target.parent, prefix)
    try:
        try:
            yield tmp
            modes = {False: default_mode(), True: default_mode(directory=True)}
            for f in tmp.rglob("*"):  # files some writers create privately (mkstemp) become ordinary
                if not f.is_symlink():
                    f.chmod(modes[f.is_dir()])
            replace_dir(tmp, target)
        except OSError as e:
            _raise_if_disk_full(e, target)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- replacing a folder without a window

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
TRASH_MARK = ".old-"


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux renameat2(RENAME_EXCHANGE). False where the OS, libc or file
    system does not offer it (then the caller falls back); other errors raise."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.lru_cache(maxsize=1)
def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _raise_if_disk_full(e: OSError, where: Path) -> None:
    """A full disk or quota becomes one clear OutputError line naming the file or folder being written."""
    if e.errno in _DISK_FULL:
        raise OutputError(
            f"cannot write {where}: {os.strerror(e.errno).lower()}",
            hint="free space on that disk (or quota), or write the outputs elsewhere (-o); "
            "everything completed before is kept",
        ) from None


def trash_name(target: Path) -> Path:
    """Where the fallback parks the old `target` while the new one is renamed in."""
    return target.parent / f".{target.name}{TRASH_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in the place of `target` so that `target` is never missing.

    Linux: renameat2(RENAME_EXCHANGE) swaps the two in one step, then the old folder (now at `new`) is
    deleted. Elsewhere, or on a file system without RENAME_EXCHANGE, the fallback renames the old folder to a
    trash name beside it (`.<name>.old-<pid>-<random>`), renames `new` in and deletes the trash; a crash
    between the two renames leaves the old folder under the trash name, which `recover_dir` (run by the next
    writer of `target`) renames back."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _renameat2_exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)
        return
    trash = trash_name(target)
    os.rename(target, trash)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(trash, target)  # put the old folder back
        raise
    shutil.rmtree(trash, ignore_errors=True)


def leftover_trash(target: Path) -> list[Path]:
    """Trash folders of `target` left by a crash inside the fallback of `replace_dir`."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{glob.escape(target.name)}{TRASH_MARK}*"))


def recover_dir(target: str | Path) -> bool:
    """Undo what a crash inside `replace_dir`'s fallback left: when `target` is missing and a trash folder of
    it exists, rename that back (returns True); trash folders beside an existing `target` are deleted. Only the
    one process allowed to write `target` may call this (the cell store holds the cell's claim)."""
    target = Path(target)
    restored = False
    for trash in leftover_trash(target):
        if not target.exists():
            os.rename(trash, target)
            restored = True
        else:
            shutil.rmtree(trash, ignore_errors=True)
    return restored


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A temporary folder inside `parent` with the ordinary mode (0777 less the umask), to be renamed into
    place once complete."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = Path(parent) / f"{prefix}{secrets.token_hex(6)}"
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))
