"""report.html in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): opened from
disk (file://, no server), every table renders with the row count of its source table, every image decodes
(naturalWidth > 0) and is one of the report folder's PNGs, and a recorded coloured-token sample renders inside
its frame.

Set-up: `bash scripts/setup_browser.sh` (root + apt-get) and the `test` extra (selenium). Where root and apt-get
are available (CI) a missing browser or selenium is a failure, not a skip; elsewhere the test skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from recorded_runs import paper_shapes_run

from mechsteer.report import write_report
from mechsteer.results import Results

REPO = Path(__file__).resolve().parents[2]
TOKENS = (
    "<!DOCTYPE html><html><body><span class='tok' style='background:#f4a582'>To</span>"
    "<span class='tok' style='background:#92c5de'> solve</span></body></html>"
)


def _can_install() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if (chromium is None or driver is None) and _can_install():
        subprocess.run(["bash", str(REPO / "scripts" / "setup_browser.sh")], check=False)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if _can_install():
            pytest.fail("selenium is missing: install the test extra (pip install -e '.[test]')")
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    if chromium is None or driver is None:
        if _can_install():
            pytest.fail("chromium/chromedriver missing although apt-get is available: run scripts/setup_browser.sh")
        pytest.skip(
            "no chromium + chromedriver here and no root apt-get to install them "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--allow-file-access-from-files",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _markdown_tables(md: str) -> list[int]:
    """Body row counts of the pipe tables in report.md, in order."""
    counts, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|:- "):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            counts.append(j - i - 2)
            i = j
        else:
            i += 1
    return counts


def test_report_html_renders_in_a_headless_browser(tmp_path):
    run = paper_shapes_run(tmp_path / "run", token_html=TOKENS)
    out = write_report(Results.load(run)).parent
    page = out / "report.html"
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    expected_rows = _markdown_tables((out / "report.md").read_text())
    assert len(expected_rows) >= 6
    browser = _browser()
    try:
        browser.get(page.as_uri())
        tables = browser.find_elements("css selector", "table")
        assert [len(t.find_elements("css selector", "tbody tr")) for t in tables] == expected_rows
        for t in tables:  # every rendered table has visible size
            assert t.size["width"] > 0 and t.size["height"] > 0
        images = browser.find_elements("css selector", "img")
        assert len(images) == len(pngs)
        sizes = [
            browser.execute_script(
                "return [arguments[0].complete, arguments[0].naturalWidth, arguments[0].naturalHeight]", im
            )
            for im in images
        ]
        assert all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
        # the decoded widths are the PNG files' own widths (PNG header: width at bytes 16..20)
        widths = sorted(int.from_bytes(p.read_bytes()[16:20], "big") for p in pngs)
        assert sorted(w for _, w, _ in sizes) == widths
        # a row of the results table names its cells
        res = Results.load(run).table()
        row = browser.find_element("xpath", "//table[1]//tr[td[2][normalize-space()='single_1']]")
        assert row.get_attribute("title") == "cells: " + " ".join(sorted(set(res[res.condition == "single_1"].cell)))
        # the coloured-token sample: open its frame and find the spans
        details = browser.find_element("css selector", "details")
        details.find_element("css selector", "summary").click()
        frame = details.find_element("css selector", "iframe")
        browser.switch_to.frame(frame)
        spans = browser.find_elements("css selector", "span.tok")
        assert [s.text.strip() for s in spans] == ["To", "solve"]
        assert "244, 165, 130" in spans[0].value_of_css_property("background-color")
        browser.switch_to.default_content()
    finally:
        browser.quit()
    table = pd.read_csv(out / "paper_table_lenient.csv")
    assert len(table) == expected_rows[2]  # the paper table has one row per condition
