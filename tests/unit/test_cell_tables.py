"""Cell tables round-trip token text verbatim, carriage returns included (byte-level vocabularies have "\\r" and
"\\r\\n" tokens; an unquoted "\\r" once ended a row, which shifted a logit-lens table's columns and broke the
report)."""

from __future__ import annotations

import math

import pandas as pd

from mechsteer.cell_tables import csv_bytes, read_csv


def test_tokens_with_carriage_returns_round_trip(tmp_path):
    tokens = ["\r", "a\rb", "\r\n", "\n", 'x,"y', "nan", "1", ""]
    df = pd.DataFrame(
        {
            "layer": range(len(tokens)),
            "normed": [i % 2 == 0 for i in range(len(tokens))],
            "token": tokens,
            "value": [0.5 * i for i in range(len(tokens) - 1)] + [math.nan],
        }
    )
    f = tmp_path / "t.csv"
    f.write_bytes(csv_bytes(df))
    back = read_csv(f)
    assert back["token"].tolist() == tokens
    assert back["normed"].tolist() == df["normed"].tolist() and back["normed"].dtype == bool
    assert back["value"].iloc[:-1].tolist() == df["value"].iloc[:-1].tolist() and math.isnan(back["value"].iloc[-1])
    assert len(back) == len(df)


def test_an_empty_table_reads_back_empty(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_bytes(csv_bytes(pd.DataFrame()))
    assert read_csv(f).empty
