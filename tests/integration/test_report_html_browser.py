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
from hostile_runs import hostile_run, outside_markers
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
    assert len(pngs) == 4  # the effects figure and three sweep plots
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
        # a row of the results table (the first table with `model` in its first column) names its cells
        res = Results.load(run).table()
        row = browser.find_element(
            "xpath", "(//table[thead/tr/th[1][normalize-space()='model']])[1]//tr[td[2][normalize-space()='single_1']]"
        )
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
    assert len(table) == len(Results.load(run).conditions)  # the paper table has one row per condition
    assert len(table) in expected_rows


def test_a_hostile_report_runs_no_script_and_shows_no_outside_file(tmp_path):
    """The report of a hostile output folder (`tests/hostile_runs.py`: script tags, event handlers and
    `javascript:` links in names and the description, a cell's HTML sample with a script, symlinks to files
    outside the folder), opened from disk: no script runs (in the page or in a frame), no dialog opens, no link
    leaves for a `javascript:`, `data:` or outside `file:` target, and the only images are the folder's own."""
    run = hostile_run(tmp_path)
    page = write_report(Results.load(run)).parent / "report.html"
    text = page.read_text()
    assert not any(m in text for m in outside_markers())
    browser = _browser()
    try:
        browser.get(page.as_uri())
        for details in browser.find_elements("css selector", "details"):  # open every frame
            details.find_element("css selector", "summary").click()
        frames = browser.find_elements("css selector", "iframe")
        assert frames, "the cell's HTML sample is embedded"
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
        alert = browser.execute_script("return 1")  # a pending dialog would make any script call fail
        assert alert == 1
        links = browser.execute_script(
            "return Array.from(document.links, a => [a.protocol, decodeURIComponent(a.pathname)])"
        )
        assert links
        for protocol, path in links:
            assert protocol in ("http:", "https:", "file:"), (protocol, path)
            if protocol == "file:":
                assert path.startswith(str(run)), path
        images = browser.execute_script(
            "return Array.from(document.images, i => [i.title, i.complete, i.naturalWidth])"
        )
        own = sorted(p.name for p in (run / "report").glob("*.png") if not p.is_symlink())
        assert {"extra.png", "own.png"} < set(own) and sorted(t for t, _, _ in images) == own
        assert all(ok and w > 0 for _, ok, w in images), images
        # the frame still shows its sample (sandboxing stops scripts, not rendering)
        browser.switch_to.frame(frames[0])
        assert [s.text for s in browser.find_elements("css selector", "span.tok")] == ["ok"]
        browser.switch_to.default_content()
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
    finally:
        browser.quit()


def _wide_run(root):
    """Two models, a dozen conditions with long names, an evaluation, a generate readout and a first_token
    readout tracking eight tokens (17 metrics): the tables a report must split to fit."""
    from recorded_runs import eval_cell, generate_cell, write_run

    tokens = ["To", "Step", "The", "First", "Let", "We", "Answer", "Solution"]
    conditions = ["base"] + [f"steer_head_{i}_with_a_rather_long_name" for i in range(11)]
    cells = []
    for model in ("qwen_math_7b", "llama_8b_instruct"):
        for k, cond in enumerate(conditions):
            outcome = [1 if (i + k) % 3 else 0 for i in range(48)]
            cells += [eval_cell(model, cond, outcome), generate_cell(model, cond, outcome, name="sampled_t1")]
            metrics = {"n": 48.0, "entropy": 1.0 + k / 10}
            for t in tokens:
                metrics |= {f"p({t})": 0.1 + k / 100, f"top1=={t}": 0.05}
            cells.append(
                {
                    "model": model,
                    "condition": cond,
                    "measurement": "readout:first_token_distribution",
                    "kind": "first_token",
                    "seed": 0,
                    "metrics": metrics,
                    "samples": [],
                }
            )
    ev = {"tasks": ["mini"], "protocol": "greedy", "seeds": [0], "control": conditions[1]}
    return write_run(root, study="wide", cells=cells, evaluation=ev)


@pytest.mark.parametrize("which", ["paper_shapes", "wide"])
def test_no_table_or_figure_overflows_at_1280_px(tmp_path, which):
    """At a 1280 px wide window every table and figure of report.html fits: the page has no horizontal
    scroll, and no element's content is wider than the element."""
    run = paper_shapes_run(tmp_path / "run") if which == "paper_shapes" else _wide_run(tmp_path / "run")
    page = write_report(Results.load(run)).parent / "report.html"
    browser = _browser()
    try:
        browser.set_window_size(1280, 1000)
        browser.get(page.as_uri())
        view = browser.execute_script("return document.documentElement.clientWidth")
        assert 1200 <= view <= 1280
        boxes = browser.execute_script(
            "return Array.from(document.querySelectorAll('table, img'), e => [e.tagName, "
            "e.getBoundingClientRect().left, e.getBoundingClientRect().right, e.scrollWidth, e.clientWidth])"
        )
        assert sum(tag == "TABLE" for tag, *_ in boxes) >= 5 and any(tag == "IMG" for tag, *_ in boxes)
        for tag, left, right, scroll, client in boxes:
            assert left >= 0 and right <= view + 0.5, (tag, left, right, view)
            assert scroll <= client + 1, (tag, scroll, client)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= view
    finally:
        browser.quit()
