"""atomic_dir replacing an existing folder: never a moment without the old or the new folder, on both paths
(Linux renameat2(RENAME_EXCHANGE), and the trash-rename fallback with recovery after a crash), and a full
disk that leaves the old folder as it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mechsteer import atomic
from mechsteer.atomic import atomic_dir, leftover_trash, recover_dir
from mechsteer.errors import OutputError


def _make(target: Path, text: str) -> None:
    with atomic_dir(target, prefix=".tmp-t-") as tmp:
        (tmp / "data.txt").write_text(text)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


@pytest.fixture(params=["exchange", "fallback"])
def path_kind(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(atomic, "_renameat2_exchange", lambda a, b: False)
    return request.param


def test_replace_swaps_in_the_new_folder(tmp_path, path_kind, monkeypatch):
    target = tmp_path / "cell"
    _make(target, "old")
    swaps, real = [], atomic._renameat2_exchange
    monkeypatch.setattr(atomic, "_renameat2_exchange", lambda a, b: swaps.append(real(a, b)) or swaps[-1])
    _make(target, "new")
    assert _files(target) == {"data.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell"]  # no temp or trash folder left
    # this Linux file system offers RENAME_EXCHANGE: the swap uses it, unless the test forces the fallback
    assert swaps == ([True] if path_kind == "exchange" else [False])


def test_renameat2_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("A"), (b / "x").write_text("B")
    ino_a = a.stat().st_ino
    assert atomic._renameat2_exchange(a, b) is True
    assert (a / "x").read_text() == "B" and (b / "x").read_text() == "A" and b.stat().st_ino == ino_a


def _fail_every_rename(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "injected crash at the rename")

    monkeypatch.setattr(os, "rename", fail)
    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(atomic, "_renameat2_exchange", fail)


def test_a_failure_at_the_rename_keeps_the_old_folder(tmp_path, monkeypatch):
    target = tmp_path / "cell"
    _make(target, "old")
    _fail_every_rename(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        _make(target, "new")
    assert _files(target) == {"data.txt": "old"}


def test_fallback_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    """The fallback renames the old folder aside, then the new one in. A crash (SIGKILL: no cleanup runs)
    between the two leaves the old folder under its trash name; the next writer renames it back."""
    target = tmp_path / "cell"
    _make(target, "old")
    trash = atomic.trash_name(target)
    os.rename(target, trash)  # the state right after the fallback's first rename
    (tmp_path / ".tmp-t-abc").mkdir()  # and the new folder, never renamed in
    assert not target.exists() and leftover_trash(target) == [trash]
    assert recover_dir(target) is True
    assert _files(target) == {"data.txt": "old"} and not leftover_trash(target)
    # atomic_dir recovers by itself before writing, so a forced re-run after the crash works
    monkeypatch.setattr(atomic, "_renameat2_exchange", lambda a, b: False)
    os.rename(target, trash)
    _make(target, "new")
    assert _files(target) == {"data.txt": "new"} and not leftover_trash(target)


def test_fallback_second_rename_failing_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "cell"
    _make(target, "old")
    monkeypatch.setattr(atomic, "_renameat2_exchange", lambda a, b: False)
    real, calls = os.rename, []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new folder going in
            raise OSError(errno.EIO, "injected")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="injected"):
        _make(target, "new")
    assert calls[0][0] == "cell" and calls[0][1].startswith(".cell.old-")
    assert _files(target) == {"data.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell"]


def test_trash_beside_an_existing_folder_is_deleted(tmp_path):
    target = tmp_path / "cell"
    _make(target, "new")
    trash = atomic.trash_name(target)
    trash.mkdir()
    assert recover_dir(target) is False
    assert not trash.exists() and _files(target) == {"data.txt": "new"}


def test_full_disk_is_an_output_error_naming_the_folder(tmp_path, path_kind):
    target = tmp_path / "cell"
    _make(target, "old")
    with pytest.raises(OutputError) as e:
        with atomic_dir(target, prefix=".tmp-t-") as tmp:
            (tmp / "part.txt").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(target) in str(e.value) and "no space left on device" in str(e.value)
    assert "\n" not in str(e.value)
    assert _files(target) == {"data.txt": "old"} and sorted(p.name for p in tmp_path.iterdir()) == ["cell"]
