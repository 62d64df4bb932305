"""Reading what readouts recorded, for their report sections: the recorded cells of one kind and the CSV a
kind keeps in each of them, gathered into one table. Reached by readouts (a lower layer) through
`Results.recorded_cells(kind)` and `Results.gather(kind, name)`."""

from __future__ import annotations

import pandas as pd

from mechsteer.cell_tables import read_csv


def recorded_cells(results, kind: str) -> list[dict]:
    """One row per recorded cell of `kind` (conditions sharing the cell joined by '/')."""
    by_hash: dict[str, dict] = {}
    for c in results.recorded():
        if c["kind"] != kind:
            continue
        row = by_hash.setdefault(c["hash"], dict(c))
        if c["condition"] not in row["condition"].split("/"):
            row["condition"] += "/" + c["condition"]
    return list(by_hash.values())


def gather(results, kind: str, name: str) -> pd.DataFrame:
    """The CSV `<kind>/<name>` of every recorded cell of `kind`, with model, condition, measurement, seed and
    cell columns in front (empty when none)."""
    parts = []
    for c in recorded_cells(results, kind):
        f = results.store.dir(c["hash"]) / kind / name
        if f.is_file() and f.stat().st_size > 1:
            df = read_csv(f)
            for i, col in enumerate(("model", "condition", "measurement", "seed", "cell")):
                df.insert(
                    i,
                    col,
                    c[col if col != "cell" else "hash"] if col != "measurement" else c["measurement"].split(":", 1)[1],
                )
            parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


__all__ = ["gather", "recorded_cells"]
