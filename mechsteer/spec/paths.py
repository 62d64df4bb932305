"""Paths written in spec files: the one rule for resolving them (torch-free)."""

from __future__ import annotations

from pathlib import Path


def resolve_path(p: str | Path, base_dir: str | Path | None) -> Path:
    """A path from a spec file: `~` expanded; a relative path is taken relative to the file's folder
    (`base_dir`; the working directory when None)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path
