"""A report built from a hostile output folder (`tests/hostile_runs.py`: a downloaded run's plan.json with
hostile names, description and tokens, symlinks to files outside it) shows the text and nothing more: no file
from outside the folder is inlined, no script, event handler or `javascript:` link reaches the page, frames
are sandboxed, and a `|` in a name or token never shifts a table's columns (report.md and report.html)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hostile_runs import CONDITIONS, TOKEN, hostile_run, outside_markers
from typer.testing import CliRunner

from mechsteer.cli.app import app


def _cells(line: str) -> list[str]:
    """A pipe-table row's cells, split at `|` not escaped as `\\|` (GitHub's table rule)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each table cell per table."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = hostile_run(tmp_path_factory.mktemp("hostile"))
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    out = run / "report"
    return out, (out / "report.html").read_text(), (out / "report.md").read_text()


def test_no_file_from_outside_the_output_folder_is_inlined(report):
    out, page, _ = report
    for marker in outside_markers():
        assert marker not in page
    # the folder's own figures are there; the symlink to an outside PNG in report/ is neither shown nor listed
    parser = _Tags()
    parser.feed(page)
    imgs = [a for t, a in parser.tags if t == "img"]
    own = sorted(p.name for p in out.glob("*.png") if not p.is_symlink())  # the report's figures and the two
    assert {"extra.png", "own.png"} < set(own) and len(own) == 4  # placed ones (effects: one figure per model)
    assert sorted(a["title"] for a in imgs) == own
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert "[image not shown: /etc/passwd]" in page and "[image not shown: ../../outside.png]" in page


def test_no_script_handler_or_dangerous_link_survives(report):
    _, page, _ = report
    parser = _Tags()
    parser.feed(page)
    assert [t for t, _ in parser.tags if t in ("script", "object", "embed", "base")] == []
    handlers = [(t, k) for t, a in parser.tags for k in a if k.lower().startswith("on")]
    assert handlers == []
    hrefs = [a["href"] for t, a in parser.tags if t == "a"]
    assert hrefs and not any(
        re.sub(r"\s", "", h).lower().startswith(("javascript", "data", "file", "/")) for h in hrefs
    )
    assert "https://example.org/a" in hrefs  # an http(s) link is kept
    frames = [a for t, a in parser.tags if t == "iframe"]
    assert frames and all(a.get("sandbox") == "" for a in frames)
    # the hostile text is shown as text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


def test_a_pipe_in_a_name_or_token_keeps_every_column(report):
    _, page, md = report
    parser = _Tags()
    parser.feed(page)
    results = next(t for t in parser.tables if f"p({TOKEN})" in t[0])  # the first_token table
    header, body = results[0], results[1:]
    assert all(len(row) == len(header) for row in body), results
    col = header.index("condition")
    shown = [row[col] for row in body]
    assert len(shown) == len(CONDITIONS)
    # plain names come through whole, `|` included, markup as text; link and image syntax follows the policy
    assert {"base", "c|d", CONDITIONS[1], CONDITIONS[5]} <= set(shown), shown
    assert "[image not shown: /etc/passwd]" in shown and "a)" in shown
    # report.md: every row of every table the report writes (after the study's own description) splits into its
    # header's number of cells
    lines = md[md.index("## Effects") :].split("\n")
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|:- "):
            width = len(_cells(line))
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert len(_cells(lines[j])) == width, lines[j]
                j += 1


def test_markdown_table_round_trips_pipes_and_line_breaks():
    import pandas as pd

    from mechsteer.safe_text import markdown_table, split_md_row

    df = pd.DataFrame({"na|me": ["a|b", "c\\|d", "e\nf"], "x": [1, 2, 3]})
    lines = markdown_table(df, index=False).split("\n")
    assert split_md_row(lines[0]) == ["na|me", "x"]
    assert [split_md_row(r)[0] for r in lines[2:]] == ["a|b", "c\\|d", "e\\nf"]


@pytest.mark.parametrize(
    "href, ok",
    [
        ("plots/a.png", True),
        ("../cells/ab/x.html", True),
        ("https://example.org/x?a=1", True),
        ("HTTP://example.org", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("java\tscript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("file:///etc/passwd", False),
        ("/etc/passwd", False),
        ("//evil.example/x", False),
        ("\\\\evil\\x", False),
        ("vbscript:x", False),
        ("http:/x", False),
        ("", False),
    ],
)
def test_allowed_href(href, ok):
    from mechsteer.report.html import allowed_href

    assert allowed_href(href) is ok


def test_a_dollar_in_a_label_is_drawn_not_parsed_as_tex(tmp_path):
    """Condition names reach plot titles, legends and ticks; `$\\x$` is invalid TeX and made matplotlib raise."""
    import pandas as pd

    from mechsteer.readouts.plots import heatmap, line_plot
    from mechsteer.train.metrics import plot_metrics

    name = "c$\\x$|"
    df = pd.DataFrame({"layer": [0, 1, 0, 1], "mean": [1.0, 2.0, 2.0, 3.0], "sweep": [name, name, "b", "b"]})
    line_plot(df, tmp_path / "l.png", x="layer", y="mean", hue="sweep", title=name, bands={name: 1.5})
    heatmap(pd.DataFrame([[1.0, -1.0]], index=[name], columns=[name, "y"]), tmp_path / "h.png", title=name)
    steps = [{"type": "step", "step": 1, "reward_mean": 0.1, "loss": 0.2, "grad_norm": 1.0, "accuracy": 0.5}]
    plot_metrics(steps, tmp_path / "m.png", title=name)
    for f in ("l.png", "h.png", "m.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    assert matplotlib.rcParams["text.parse_math"] is True  # scoped to the plots: nothing global changed


def test_file_stems_from_long_names_fit_a_file_system(tmp_path):
    """Plot and CSV names join model, condition and measurement names: a long join ends in a hash instead of
    exceeding the 255-byte limit of a file name (and two long names that share a start stay distinct)."""
    from mechsteer.cell_tables import slug
    from mechsteer.report.sweeps import _safe

    a, b = "m" * 100, "c" * 100
    stems = {_safe(f"sweep_{a}_{b}_1"), _safe(f"sweep_{a}_{b}_2"), slug(a, b, "x"), slug(a, b, "y")}
    assert len(stems) == 4
    for stem in stems:
        assert len(stem) <= 120
        (tmp_path / f"{stem}_ri.csv").write_text("ok")  # it is a valid file name
    assert _safe("sweep_single_{layer}_smol_mini_acc_lenient") == "sweep_single_layer_smol_mini_acc_lenient"
