"""The tables readouts record as cell files (CSV) and read back for the report, and how they are named and
shown: `csv_bytes` (a DataFrame as a cell file), `read_csv` (a recorded table back, token text kept verbatim),
`slug` (a file-name-safe join of labels), `md` (a Markdown table).

Layer 1 (pandas only): a readout's `run` writes these files and its `report_section` reads them, so both sides
use one definition; reading every recorded cell of a kind is the report's (`mechsteer.report.records`, reached
through `Results.gather` / `Results.recorded_cells`).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mechsteer.safe_text import cap_stem, markdown_table

TEXT_COLUMNS = {"token", "boosted", "suppressed", "ref_top", "other_top", "segment", "vectors", "condition"}
"""Columns that hold token or label text: never parsed as numbers or NaN (a token may be "nan", "1" or "")."""


def csv_bytes(df: pd.DataFrame, index: bool = False) -> bytes:
    """A table as the bytes of a cell file. Rows end in CRLF, so that the csv writer quotes every field holding a
    carriage return or a line feed: byte-level vocabularies have tokens such as "\r" and "\r\n", and an
    unquoted "\r" ends a row for every CSV reader."""
    return df.to_csv(index=index, lineterminator="\r\n").encode()


def read_csv(path: Path, **kw) -> pd.DataFrame:
    """A recorded table back, with token text kept verbatim (no newline translation: a quoted "\r" stays one)
    and empty numeric cells as NaN."""
    text = Path(path).read_bytes().decode()
    if not text.strip():  # an empty table (no columns) is written as a bare line end
        return pd.DataFrame()
    df = pd.read_csv(io.StringIO(text), keep_default_na=False, **kw)
    for c in df.columns:
        if c in TEXT_COLUMNS or not (pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])):
            continue
        filled = df[c] != ""
        num = pd.to_numeric(df[c].where(filled), errors="coerce")
        if bool((num.notna() == filled).all()):
            df[c] = num
    return df


def slug(*parts) -> str:
    """A file-name-safe join of labels (a long join ends in a hash of the whole, see `safe_text.cap_stem`)."""
    return cap_stem("_".join("".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(p)) for p in parts))


def md(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    """A Markdown table of a readout's table (no index, 3 significant digits)."""
    return markdown_table(df, index=False, floatfmt=floatfmt)


__all__ = ["TEXT_COLUMNS", "csv_bytes", "md", "read_csv", "slug"]
