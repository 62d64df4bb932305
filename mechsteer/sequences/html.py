"""One coloured-token renderer: token sequences with a value per token as a self-contained HTML page (inline
styles, no scripts, no links), used for token-shift samples (KL per generated token) and DiffSAE feature
contexts (a feature's activation per token).

Colours diverge from white at 0: orange for positive, blue for negative values, with one scale per section
(the largest |value| in it). A token without a value (None: not analysed) is drawn plain."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

TOKEN_STYLE = "white-space:pre-wrap;font-family:monospace;padding:1px;border:1px solid #ddd;"


@dataclass
class TokenRow:
    """One drawn sequence."""

    title: str
    tokens: list[str]
    """Each token's text."""
    values: list[float | None]
    """The value drawn on each token (None = not analysed)."""
    notes: list[str | None] = field(default_factory=list)
    """Optional tooltip text per token."""
    marked: int | None = None
    """A token to outline (e.g. the one a context is centred on)."""


def colour(v: float, vmax: float) -> str:
    """Diverging blue (negative) - white (0) - orange (positive), as an rgb() string."""
    x = 0.0 if vmax <= 0 or math.isnan(v) else max(-1.0, min(1.0, v / vmax))
    hi = (230, 120, 20) if x > 0 else (40, 100, 220)
    a = abs(x)
    r, g, b = (round(255 + (c - 255) * a) for c in hi)
    return f"rgb({r},{g},{b})"


def _scale(rows: Seq[TokenRow]) -> float:
    vals = [abs(v) for r in rows for v in r.values if v is not None and not math.isnan(v)]
    return max(vals) if vals else 0.0


def render_tokens(sections: Seq[tuple[str, Seq[TokenRow]]], *, title: str, value_name: str = "value") -> str:
    """A standalone HTML page: per section (heading, rows; an empty heading draws none) each row's title and
    its tokens coloured by value, with the value (and the note) as the token's tooltip."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title></head>",
        "<body style='font-family:sans-serif'>",
        f"<h2>{html.escape(title)}</h2>",
        f"<p>colour: {html.escape(value_name)}, blue &lt; 0 &lt; orange</p>",
    ]
    for heading, rows in sections:
        vmax = _scale(rows)
        if heading:
            parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts.append(f"<p>|max| = {vmax:.4g}</p>")
        for row in rows:
            parts.append(f"<h4>{html.escape(str(row.title))}</h4><div style='line-height:1.9'>")
            notes = row.notes or [None] * len(row.tokens)
            for j, (tok, v, note) in enumerate(zip(row.tokens, row.values, notes)):
                tip = f"{value_name}={v:.4g}" if v is not None else "not analysed"
                if note:
                    tip += f"; {note}"
                style = TOKEN_STYLE
                if v is not None:
                    style += f"background:{colour(v, vmax)};"
                if j == row.marked:
                    style += "outline:2px solid #333;"
                parts.append(f"<span title='{html.escape(tip, quote=True)}' style='{style}'>{html.escape(tok)}</span>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
