"""The readouts' figures (matplotlib, Agg backend, no display needed): a diverging heat-map centred at 0 and
a per-layer line plot with baseline bands. PNGs are written atomically (a crash never leaves half a file)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mechsteer.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plain_labels(fn):
    """Run a plotting function with matplotlib's mathtext off: titles, labels, ticks and legends hold user text
    (condition and model names, tokens), and a `$` there must be drawn, not parsed as TeX (which raises on
    `$\\x$`). The setting is scoped to the call; nothing global changes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)

    return wrapper


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


@plain_labels
def heatmap(
    matrix: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    markers: Sequence[tuple] = (),
    vlines: Sequence[float] = (),
    cmap: str = "RdBu_r",
    annotate: bool | None = None,
    limits: tuple[float, float] | None = None,
    crosses: Sequence[tuple] = (),
) -> Path:
    """Heat-map of a DataFrame (rows = y, columns = x), colours centred at 0 (limits +-max|value| unless
    `limits` = (low < 0, high > 0) gives them, e.g. (-2, 1) for a scale capped at 1; NaN blank). `markers`:
    (row label, column label) cells to outline; `crosses`: cells marked with an x; `vlines`: x positions
    (column indices, e.g. prompt-segment borders) drawn as dashed lines. Values are printed in the cells when
    small enough (annotate=None: auto for <= 15 x 15)."""
    from matplotlib import patheffects
    from matplotlib.colors import Normalize, TwoSlopeNorm

    plt = _pyplot()
    a = matrix.to_numpy(dtype=float)
    finite = np.abs(a[np.isfinite(a)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    norm = Normalize(-vmax, vmax) if limits is None else TwoSlopeNorm(0.0, min(limits[0], -1e-9), max(limits[1], 1e-9))
    h, w = a.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * w, 16), min(1.5 + 0.4 * h, 12)))
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax)
    step_x, step_y = max(1, w // 30), max(1, h // 30)
    ax.set_xticks(range(0, w, step_x), [str(c) for c in list(matrix.columns)[::step_x]], rotation=90)
    ax.set_yticks(range(0, h, step_y), [str(c) for c in list(matrix.index)[::step_y]])
    ax.set_xlabel(xlabel if xlabel is not None else str(matrix.columns.name or ""))
    ax.set_ylabel(ylabel if ylabel is not None else str(matrix.index.name or ""))
    ax.set_title(title)
    cols, rows = list(matrix.columns), list(matrix.index)
    for r, c in markers:
        if r in rows and c in cols:
            ax.add_patch(plt.Rectangle((cols.index(c) - 0.5, rows.index(r) - 0.5), 1, 1, fill=False, lw=2, ec="k"))
    for r, c in crosses:
        if r in rows and c in cols:
            ax.plot(cols.index(c), rows.index(r), marker="x", ms=20, mew=2, color="0.3", alpha=0.7, ls="none")
    for x in vlines:
        ax.axvline(x - 0.5, color="k", ls="--", lw=1)
    if annotate or (annotate is None and h <= 15 and w <= 15):
        for i in range(h):
            for j in range(w):
                if np.isfinite(a[i, j]):
                    t = ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=7)
                    t.set_path_effects([patheffects.withStroke(linewidth=2, foreground="w")])
    return _save(fig, path)


@plain_labels
def line_plot(
    df: pd.DataFrame,
    path: str | Path,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    title: str = "",
    bands: Mapping[str, tuple[float, float] | float] | None = None,
    ylabel: str | None = None,
    err: str | None = None,
    ci: tuple[str, str] | None = None,
) -> Path:
    """y against x (e.g. accuracy or a metric per layer), one line per `hue` value. `bands`: label ->
    (low, high) shaded horizontal band, or a single value drawn as a horizontal line (baselines such as the
    unsteered model or a random control). `err`: a column of +- half-widths (e.g. the std over seeds) shaded
    around each line. `ci`: the columns of an interval's lower and upper ends, drawn as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = df.groupby(hue) if hue else [(y, df)]
    for name, g in groups:
        g = g.sort_values(x)
        (line,) = ax.plot(g[x], g[y], marker="o", ms=3, label=str(name))
        if err is not None:
            e = g[err].fillna(0.0)
            ax.fill_between(g[x], g[y] - e, g[y] + e, alpha=0.2, color=line.get_color(), lw=0)
        if ci is not None:
            lo, hi = (g[y] - g[ci[0]]).clip(lower=0).fillna(0.0), (g[ci[1]] - g[y]).clip(lower=0).fillna(0.0)
            ax.errorbar(g[x], g[y], yerr=[lo, hi], fmt="none", ecolor=line.get_color(), capsize=2, lw=0.8)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, band) in enumerate((bands or {}).items()):
        col = colours[(i + 3) % len(colours)]
        if isinstance(band, tuple):
            ax.axhspan(band[0], band[1], alpha=0.2, color=col, label=label)
        else:
            ax.axhline(band, ls="--", color=col, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
