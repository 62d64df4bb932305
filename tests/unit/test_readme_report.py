"""scripts/readme_report.py's pure parts: exactly one plot/table must match, and a CSV table is shown as
Markdown with the chosen columns and rows, empty cells as "-"."""

from __future__ import annotations

import pytest
from script_loader import load_script

rr = load_script("scripts/readme_report.py")


def test_one_file_must_match(tmp_path):
    for name in ("a_x.png", "a_y.png", "t.csv", "t.md"):
        (tmp_path / name).write_text("x")
    assert rr.find_one(tmp_path, "a_x", (".png",)) == tmp_path / "a_x.png"  # ".png" added
    with pytest.raises(rr.UsageError, match=r"matches 2 files, give one: a_x.png, a_y.png"):
        rr.find_one(tmp_path, "a_*", (".png",))
    with pytest.raises(rr.UsageError, match=r"nothing matches 'b\*.png'; there are: a_x.png, a_y.png"):
        rr.find_one(tmp_path, "b*", (".png",))
    assert rr.find_one(tmp_path, "t.md", (".md", ".csv")) == tmp_path / "t.md"
    with pytest.raises(rr.UsageError, match="matches 2 files"):
        rr.find_one(tmp_path, "t.*", (".md", ".csv"))


def test_csv_table_rows_columns_and_missing_values(tmp_path):
    (tmp_path / "t.csv").write_text("cell,name,value\nh1,a,0.123456\nh2,b,\nh3,c,2\n")
    md, shown, total = rr.table_markdown(tmp_path / "t.csv", 2, ["name", "value"])
    assert (shown, total) == (2, 3)
    lines = md.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["name", "value"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["a", "0.1235"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["b", "-"]
    assert len(lines) == 4
    with pytest.raises(rr.UsageError, match="has no column nope; it has: cell, name, value"):
        rr.table_markdown(tmp_path / "t.csv", 2, ["nope"])
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n| 2 |\n")
    assert rr.table_markdown(tmp_path / "t.md", 1) == ("| a |\n|---|\n| 1 |\n| 2 |", 2, 2)
