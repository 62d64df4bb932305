"""User text (condition, model and study names, tokens, descriptions) made safe for the places it is written
to: a cell of a Markdown pipe table (a `|` would shift every later column) and a file name (a name may hold
any character and be long; a file name may not).

Escaping for HTML lives with the page writer (`report/html.py`), for rich markup at the console
(`rich.markup.escape`), for matplotlib's mathtext with the plots (`readouts/plots.py`).
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd

FILE_STEM_MAX = 120
"""Longest file stem written from user text (file systems allow 255 bytes; stems get suffixes such as
`_ri.csv`, and one name may join several)."""


def md_cell(value: object) -> object:
    """A value as a Markdown table cell: text with `|` escaped as `\\|` (GitHub's table syntax; the page
    writer reads it back) and line breaks as a visible `\\n`; numbers unchanged."""
    if not isinstance(value, str):
        return value
    return value.replace("|", "\\|").replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def markdown_table(df: pd.DataFrame, **kwargs) -> str:
    """`df.to_markdown(**kwargs)` with every text cell, column name and index label passed through `md_cell`."""
    safe = df.copy()
    safe.columns = (
        pd.Index([md_cell(c) for c in df.columns]) if not isinstance(df.columns, pd.MultiIndex) else df.columns
    )
    if isinstance(safe.index, pd.MultiIndex):
        safe.index = safe.index.set_levels([lvl.map(md_cell) for lvl in safe.index.levels])
    else:
        safe.index = safe.index.map(md_cell)
    safe.index.names = [md_cell(n) for n in df.index.names]
    for col in safe.columns:
        if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(md_cell)
    return safe.to_markdown(**kwargs)


def split_md_row(line: str) -> list[str]:
    """The cells of one pipe-table row, splitting at `|` not escaped as `\\|` (which becomes `|` again)."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def file_stem(text: str, max_len: int = FILE_STEM_MAX) -> str:
    """A file-name-safe stem of `text`: characters other than letters, digits, `_`, `.` and `-` become `_`;
    a stem longer than `max_len` keeps its start and ends with a hash of the whole text (still unique)."""
    return cap_stem(re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_", max_len)


def cap_stem(stem: str, max_len: int = FILE_STEM_MAX) -> str:
    """`stem` unchanged when it has at most `max_len` characters, else its start and a hash of the whole."""
    if len(stem) <= max_len:
        return stem
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{stem[: max_len - 13]}-{digest}"


__all__ = ["FILE_STEM_MAX", "cap_stem", "file_stem", "markdown_table", "md_cell", "split_md_row"]
