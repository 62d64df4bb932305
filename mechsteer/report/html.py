"""`report.html`: the report as one self-contained page that opens from disk with no server.

Built from the same Markdown lines as `report.md` (so the two never disagree), with:
* every table as an HTML table; a table with `model` and `condition` columns (and `seed`, when present) gets a
  `cells` column and a `title` on each row naming the hash prefixes of the recorded cells its numbers come
  from (those of the measurements its columns name; the cell folders are `cells/<hash>/`);
* every image inlined as a base64 data URI: the ones the Markdown shows in place, then every other PNG under the
  report folder in a "Figures" section;
* linked HTML files (e.g. the coloured-token contexts of a readout) embedded in a collapsible frame (`srcdoc`)
  beside the relative link, and every other HTML file the recorded cells hold (a readout's coloured-token
  samples) in a "Samples" section, each under its cell's hash prefix.
Only the subset of Markdown the report writes is understood: headings, pipe tables (`\\|` is a `|` inside a
cell), lists, paragraphs, images, links, inline code and bold.

The lines hold user text (study descriptions, condition and model names, tokens; from a downloaded folder's
plan.json, anything), so the page is built to show it and nothing more: the text is HTML-escaped first and only
then are link and image syntax turned into elements; a file is inlined (image) or embedded (HTML frame) only
when it resolves, symlinks followed, inside the run's output folder; a link is kept only when it is relative or
http(s) (no `javascript:`, `data:`, `file:` or absolute paths); embedded frames are sandboxed (no script runs).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from urllib.parse import urlsplit

from mechsteer.atomic import atomic_write_text
from mechsteer.report.paper_table import LABELS
from mechsteer.safe_text import split_md_row

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_LINK_OR_IMAGE = re.compile(r"!\[[^\]]*\]\([^)\s]+\)|\[[^\]]+\]\([^)\s]+\)")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
"""The files inlined as images (an `<img>` never runs a script, not even an SVG's)."""
MAX_INLINE_BYTES = 32 << 20
"""A larger file is linked, not inlined, so the page stays openable."""
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}td.num{text-align:right}
td.cells{font-family:monospace;font-size:11px;color:#666}img{max-width:100%;border:1px solid #eee}
code{background:#f3f3f3;padding:0 3px}iframe{width:100%;height:420px;border:1px solid #ccc}"""


def _data_uri(path: Path) -> str:
    """An image file as a data URI (callers pass only IMAGE_TYPES files inside the output folder)."""
    return f"data:{IMAGE_TYPES[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def allowed_href(href: str) -> bool:
    """Whether a link target may stay a link: a relative reference (no scheme, no host, not an absolute path)
    or an http(s) URL. Whitespace, control characters and backslashes (which browsers strip or read as `/`)
    are refused outright, so `java\tscript:` cannot pass as relative."""
    if not href or any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in href):
        return False
    try:
        parts = urlsplit(href)
    except ValueError:
        return False
    if parts.scheme:
        return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
    return not parts.netloc and not href.startswith("/")


class _Builder:
    def __init__(self, results, out_dir: Path):
        self.out = Path(out_dir)
        self.root = Path(results.output_dir).resolve()
        """The run's output folder: the only place files are inlined or embedded from."""
        self.inlined: set[Path] = set()
        self.embedded: set[Path] = set()
        self.tables = 0
        self.heading = ""
        """The text of the last heading: a table under `### <measurement>` traces that measurement's cells."""
        df = results.table()
        self.measurements = list(dict.fromkeys(df.measurement))
        self.cells: dict[tuple, set[str]] = {}
        for row in df.itertuples(index=False):
            for key in ((row.model, row.condition), (row.model, row.condition, str(row.seed))):
                self.cells.setdefault(key, set()).add(row.cell)
                self.cells.setdefault((*key, row.measurement), set()).add(row.cell)

    def _hashes(self, key: list[str], header: list[str], measurement: str | None = None) -> str:
        """The cells behind a row: of the row's own measurement (a `measurement` column, or the heading the
        table sits under, e.g. `### mini`), else restricted to the measurements the table's columns name
        (`mini/acc_lenient`, `mini`, `MATH500`), else every cell of the row's model and condition (and seed)."""
        named = [
            m for m in self.measurements if any(h == m or h.startswith(m + "/") or h == LABELS.get(m) for h in header)
        ]
        if measurement in self.measurements:
            named = [measurement]
        if not named:
            return " ".join(sorted(self.cells.get(tuple(key), ())))
        return " ".join(sorted(set().union(*(self.cells.get((*key, m), set()) for m in named))))

    # ------------------------------------------------------------------ inline Markdown
    def inside(self, path: Path) -> Path | None:
        """`path` resolved (symlinks followed) when it is a file inside the output folder, else None."""
        try:
            p = path.resolve()
            return p if p.is_relative_to(self.root) and p.is_file() else None
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            return None

    def inline(self, text: str) -> str:
        """One line of Markdown as HTML: escaped first, then links, images, code and bold made elements."""
        text = html.escape(text, quote=True)
        parts, pos = [], 0
        for m in _LINK_OR_IMAGE.finditer(text):
            parts.append(self._format(text[pos : m.start()]))
            parts.append(self._image(m.group(0)) if m.group(0).startswith("!") else self._link(m.group(0)))
            pos = m.end()
        parts.append(self._format(text[pos:]))
        return "".join(parts)

    @staticmethod
    def _format(escaped: str) -> str:
        """Inline code and bold on already escaped text."""
        t = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
        return _BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", t)

    def _image(self, token: str) -> str:
        alt, src_escaped = _IMAGE.match(token).groups()  # both still HTML-escaped
        src = html.unescape(src_escaped)
        path = self.inside(self.out / src) if allowed_href(src) and not urlsplit(src).scheme else None
        if path is None or path.suffix.lower() not in IMAGE_TYPES or path.stat().st_size > MAX_INLINE_BYTES:
            return f"<em>[image not shown: {src_escaped}]</em>"
        self.inlined.add(path)
        return f'<img alt="{alt}" title="{src_escaped}" src="{_data_uri(path)}">'

    def _link(self, token: str) -> str:
        text, href_escaped = _LINK.match(token).groups()  # both still HTML-escaped
        href = html.unescape(href_escaped)
        if not allowed_href(href):
            return f'<span title="link removed: only relative and http(s) links are kept">{self._format(text)}</span>'
        if urlsplit(href).scheme:
            return f'<a href="{href_escaped}" rel="noopener noreferrer">{self._format(text)}</a>'
        link = f'<a href="{href_escaped}">{self._format(text)}</a>'
        path = self.inside(self.out / href) if href.endswith(".html") else None
        if path is not None:
            link += self.embed(path, href)
        return link

    def embed(self, path: Path, label: str) -> str:
        """A collapsible, sandboxed frame holding an HTML file's content (no server, no file access at view
        time, no script). `path` is inside the output folder (see `inside`)."""
        self.embedded.add(path.resolve())
        if path.stat().st_size > MAX_INLINE_BYTES:
            return f"<em>[{html.escape(label)}: too large to embed]</em>"
        doc = html.escape(path.read_text(encoding="utf-8", errors="replace"), quote=True)
        return (
            f"<details><summary>show {html.escape(label)}</summary>"
            f'<iframe sandbox="" title="{html.escape(label)}" srcdoc="{doc}"></iframe></details>'
        )

    # ------------------------------------------------------------------ blocks
    def table(self, rows: list[str]) -> str:
        header = split_md_row(rows[0])
        body = [(split_md_row(r) + [""] * len(header))[: len(header)] for r in rows[2:]]  # ragged rows fitted
        lower = [h.lower() for h in header]
        trace = "model" in lower and "condition" in lower and "cells" not in lower
        self.tables += 1
        out = [f'<table data-rows="{len(body)}"><thead><tr>']
        out += [f"<th>{self.inline(h)}</th>" for h in header] + (["<th>cells</th>"] if trace else [])
        out.append("</tr></thead><tbody>")
        for cells in body:
            hashes = ""
            if trace:
                key = [cells[lower.index("model")], cells[lower.index("condition")]]
                if "seed" in lower:
                    key.append(cells[lower.index("seed")])
                meas = cells[lower.index("measurement")] if "measurement" in lower else self.heading.split(" (")[0]
                hashes = self._hashes(key, header, meas)
            out.append(f'<tr title="cells: {html.escape(hashes)}">' if hashes else "<tr>")
            for c in cells:
                cls = ' class="num"' if re.fullmatch(r"[-+]?[\d.]+( ± [\d.]+)?%?|-", c) else ""
                out.append(f"<td{cls}>{self.inline(c)}</td>")
            if trace:
                out.append(f'<td class="cells">{html.escape(hashes) or "-"}</td>')
            out.append("</tr>")
        out.append("</tbody></table>")
        return "".join(out)

    def body(self, lines: list[str]) -> str:
        out, i, para = [], 0, []

        def flush():
            if para:
                out.append(f"<p>{self.inline(' '.join(para))}</p>")
                para.clear()

        while i < len(lines):
            line = lines[i].rstrip()
            if line.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1].strip()):
                flush()
                j = i + 2
                while j < len(lines) and lines[j].strip().startswith("|"):
                    j += 1
                out.append(self.table(lines[i:j]))
                i = j
                continue
            if line.startswith("```"):
                flush()
                j = i + 1
                while j < len(lines) and not lines[j].startswith("```"):
                    j += 1
                out.append(f"<pre>{html.escape(chr(10).join(lines[i + 1 : j]))}</pre>")
                i = j + 1
                continue
            m = re.match(r"^(#{1,6})\s+(.*)$", line)
            if m:
                flush()
                level = len(m.group(1))
                self.heading = m.group(2).strip()
                out.append(f"<h{level}>{self.inline(m.group(2))}</h{level}>")
            elif line.startswith(("- ", "* ")):
                flush()
                items = []
                while i < len(lines) and lines[i].startswith(("- ", "* ")):
                    items.append(f"<li>{self.inline(lines[i][2:])}</li>")
                    i += 1
                out.append("<ul>" + "".join(items) + "</ul>")
                continue
            elif not line.strip():
                flush()
            else:
                para.append(line)
            i += 1
        flush()
        return "\n".join(out)


def write_html(results, out_dir: str | Path, lines: list[str]) -> Path:
    """Write `report.html` into `out_dir` from the report's Markdown lines (see the module docstring)."""
    out = Path(out_dir)
    b = _Builder(results, out)
    lines = "\n".join(lines).split("\n")  # report sections put whole tables into one element
    main = b.body(lines)
    samples = []
    for c in results.recorded():
        d = results.store.dir(c["hash"])
        for p in sorted(d.rglob("*.html")):
            if b.inside(p) is not None and p.resolve() not in b.embedded:
                rel = f"../cells/{c['hash']}/{p.relative_to(d).as_posix()}"
                samples.append(
                    f'<li><a href="{html.escape(rel)}">{c["hash"][:12]}: {html.escape(c["condition"])} '
                    f"/ {html.escape(c['measurement'])} / {html.escape(p.name)}</a>"
                    f"{b.embed(p, p.relative_to(d).as_posix())}</li>"
                )
    if samples:
        main += "\n<h2>Samples</h2>\n<ul>" + "\n".join(samples) + "</ul>"
    rest = [
        p
        for p in sorted(out.rglob("*.png"))
        if b.inside(p) not in (None, *b.inlined) and p.stat().st_size <= MAX_INLINE_BYTES
    ]
    if rest:
        main += "\n<h2>Figures</h2>\n" + "\n".join(
            f'<figure><img alt="{html.escape(p.name)}" title="{html.escape(str(p.relative_to(out)))}" '
            f'src="{_data_uri(p)}"><figcaption>{html.escape(str(p.relative_to(out)))}</figcaption></figure>'
            for p in rest
        )
    title = html.escape(lines[0].lstrip("# ").strip() if lines else "report")
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n{main}\n</body></html>\n"
    )
    return atomic_write_text(out / "report.html", page)


__all__ = ["write_html"]
