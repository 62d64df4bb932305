"""Paths written in spec files: the one rule for resolving them, and the content identity of a file a spec
names (torch-free)."""

from __future__ import annotations

from pathlib import Path

from mechsteer.file_hash import sha256_file


def resolve_path(p: str | Path, base_dir: str | Path | None) -> Path:
    """A path from a spec file: `~` expanded; a relative path is taken relative to the file's folder
    (`base_dir`; the working directory when None)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def file_content_key(spec) -> dict:
    """A spec's dump (`model_dump(mode="json")`) with its `path` replaced by the file's sha256: what a cell's
    hash holds of a spec that reads a file, so moving the file (or the study) changes no cell and editing it
    changes every cell that reads it. A missing file is keyed as `missing:<name>`."""
    fp = spec.model_dump(mode="json")
    path = fp.pop("path", None)
    if isinstance(path, str):
        p = Path(path)
        fp["file_sha256"] = sha256_file(p) if p.is_file() else f"missing:{p.name}"
    return fp
