"""Which DiffSAE features separate correct from incorrect generations, with examples and logit lens.

Per feature (computed on generated tokens by default, where correctness is decided):
* token level: the fraction of tokens of correct / incorrect generations on which the feature fires;
* sequence level: the fraction of correct / incorrect generations in which it fires anywhere ("fires
  anywhere in the generation", the unit of the paper's Figure 7 as the reviews describe it);
* a two-sided Fisher exact test on the sequence-level 2x2 table (fires / not x correct / incorrect).
  Sequences are the independent units; tokens of one sequence are not, so a token-level test would be
  anti-conservative and is not reported. Benjamini-Hochberg q-values over all features that fired at all;
* `freq_diff` = sequence-level frequency on correct minus on incorrect, ranked both ways.
Each top feature gets its top activating token contexts (coloured-token HTML) and the logit lens of its
decoder row (top / bottom tokens through the unembedding, optionally after the final norm).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mechsteer.atomic import atomic_path, atomic_write_text
from mechsteer.diffsae.sae import TopKSAE
from mechsteer.readouts.logit_lens import scores, top_bottom
from mechsteer.readouts.plots import plain_labels
from mechsteer.sequences.html import TokenRow, render_tokens


@dataclass
class Encoded:
    """TopK codes of every token of a collection: `idx`/`val` [n_tokens, k] (val 0 = did not fire)."""

    idx: np.ndarray
    val: np.ndarray
    width: int


@torch.no_grad()
def encode_tokens(sae: TopKSAE, x: torch.Tensor, batch_size: int = 4096) -> Encoded:
    """The SAE's TopK codes of every row of `x`, in batches so a large collection fits in memory."""
    idx, val = [], []
    for chunk in x.float().split(batch_size):
        v, i = sae.pre_acts(chunk).topk(sae.k, dim=-1)
        idx.append(i)
        val.append(v.relu())
    return Encoded(torch.cat(idx).numpy(), torch.cat(val).numpy(), sae.d_sae)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values): q_(i) = min over j >= i of m p_(j) / j, capped at 1."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = q
    return out


def firing_threshold(enc: Encoded, min_frac: float) -> np.ndarray:
    """Per-feature activation threshold: `min_frac` x the feature's largest activation over all tokens."""
    peak = np.zeros(enc.width)
    np.maximum.at(peak, enc.idx.ravel(), enc.val.ravel())
    return peak * min_frac


def feature_stats(enc: Encoded, index, *, generated_only: bool = True, min_act_frac: float = 0.0):
    """Per-feature frequency table (pandas DataFrame, one row per feature that fired at all on the selected
    tokens), with Fisher p-values, BH q-values and `freq_diff`, sorted by `freq_diff` descending.

    A feature "fires" on a token when it is among the token's k active latents with an activation above
    `min_act_frac` x its largest activation (0: any positive activation, the TopK definition). A TopK SAE
    fills all k slots on every token, so on tokens with fewer real features some latents fire weakly; a
    small relative threshold keeps those from counting."""
    import pandas as pd
    from scipy.stats import fisher_exact

    sel = index["is_generated"].to_numpy(bool).copy() if generated_only else np.ones(len(index), bool)
    graded = index["correct"].notna().to_numpy()
    sel &= graded
    correct = index["correct"].to_numpy()[sel].astype(bool)
    seq = index["seq"].to_numpy()[sel]
    idx = enc.idx[sel]
    fired = enc.val[sel] > np.maximum(firing_threshold(enc, min_act_frac)[idx], 0.0)
    w = enc.width
    seq_correct = pd.Series(correct, index=seq).groupby(level=0).first()
    n_seq_c, n_seq_i = int(seq_correct.sum()), int((~seq_correct).sum())
    n_tok_c, n_tok_i = int(correct.sum()), int((~correct).sum())

    rows_c = np.repeat(correct, idx.shape[1])[fired.ravel()]
    feats = idx.ravel()[fired.ravel()]
    tok_c = np.bincount(feats[rows_c], minlength=w)
    tok_i = np.bincount(feats[~rows_c], minlength=w)
    pairs = np.unique(np.repeat(seq, idx.shape[1])[fired.ravel()].astype(np.int64) * w + feats)
    p_seq, p_feat = pairs // w, pairs % w
    p_c = seq_correct.reindex(p_seq).to_numpy(bool)
    seq_c = np.bincount(p_feat[p_c], minlength=w)
    seq_i = np.bincount(p_feat[~p_c], minlength=w)

    live = np.nonzero(tok_c + tok_i)[0]
    pvals = np.array(
        [
            fisher_exact([[seq_c[f], n_seq_c - seq_c[f]], [seq_i[f], n_seq_i - seq_i[f]]])[1]
            if n_seq_c and n_seq_i
            else np.nan
            for f in live
        ]
    )
    df = pd.DataFrame(
        {
            "feature": live,
            "seq_freq_correct": seq_c[live] / max(n_seq_c, 1),
            "seq_freq_incorrect": seq_i[live] / max(n_seq_i, 1),
            "tok_freq_correct": tok_c[live] / max(n_tok_c, 1),
            "tok_freq_incorrect": tok_i[live] / max(n_tok_i, 1),
            "n_seq_correct_fired": seq_c[live],
            "n_seq_incorrect_fired": seq_i[live],
            "n_tok_correct_fired": tok_c[live],
            "n_tok_incorrect_fired": tok_i[live],
            "p_fisher": pvals,
        }
    )
    df["freq_diff"] = df["seq_freq_correct"] - df["seq_freq_incorrect"]
    df["tok_freq_diff"] = df["tok_freq_correct"] - df["tok_freq_incorrect"]
    ok = ~np.isnan(pvals)
    q = np.full(len(df), np.nan)
    q[ok] = benjamini_hochberg(pvals[ok])
    df["q_bh"] = q
    df.attrs.update(
        n_seq_correct=n_seq_c,
        n_seq_incorrect=n_seq_i,
        n_tok_correct=n_tok_c,
        n_tok_incorrect=n_tok_i,
        n_dead=int(w - len(live)),
        min_act_frac=min_act_frac,
    )
    return df.sort_values(["freq_diff", "p_fisher"], ascending=[False, True]).reset_index(drop=True)


# -------------------------------------------------------------------------------------------- contexts
def token_rows(index) -> dict[tuple[int, int], int]:
    """(seq, position) -> row of the index (built once per analysis)."""
    return {(int(s), int(p)): r for r, (s, p) in enumerate(zip(index["seq"].to_numpy(), index["position"].to_numpy()))}


def top_contexts(
    enc: Encoded,
    index,
    sequences: list[dict],
    feature: int,
    *,
    n: int = 5,
    window: int = 8,
    generated_only: bool = True,
    rows_by_token: dict | None = None,
) -> list[dict]:
    """The `n` tokens (at most one per sequence) where `feature` is strongest, with a token window around
    each and the feature's activation on every token of the window."""
    act = np.where(enc.idx == feature, enc.val, 0).max(axis=1)
    mask = act > 0
    if generated_only:
        mask &= index["is_generated"].to_numpy(bool)
    rows = np.nonzero(mask)[0]
    rows = rows[np.argsort(-act[rows], kind="stable")]
    seq_col, pos_col = index["seq"].to_numpy(), index["position"].to_numpy()
    row_of = rows_by_token if rows_by_token is not None else token_rows(index)
    by_seq = {int(s["seq"]): s for s in sequences}
    out, seen = [], set()
    for r in rows:
        s = int(seq_col[r])
        if s in seen:
            continue
        seen.add(s)
        ids = list(by_seq[s]["prompt_ids"]) + list(by_seq[s]["generated_ids"])
        p = int(pos_col[r])
        lo, hi = max(0, p - window), min(len(ids), p + window + 1)
        acts = [float(act[row_of[(s, q)]]) if (s, q) in row_of else 0.0 for q in range(lo, hi)]
        out.append(
            {
                "seq": s,
                "problem": by_seq[s]["problem"],
                "correct": by_seq[s]["correct"],
                "position": p,
                "activation": float(act[r]),
                "token_ids": ids[lo:hi],
                "acts": acts,
                "center": p - lo,
            }
        )
        if len(out) >= n:
            break
    return out


def contexts_html(features: list[tuple[int, str, list[dict]]], token_text: Callable[[int], str]) -> str:
    """A standalone HTML page (`mechsteer.sequences.html.render_tokens`): per feature, its contexts with
    tokens coloured by the feature's activation (one scale per feature), the centre token outlined."""
    sections = []
    for feat, title, ctxs in features:
        rows = []
        for c in ctxs:
            verdict = {True: "correct", False: "incorrect"}.get(c["correct"], "ungraded")
            rows.append(
                TokenRow(
                    f"{verdict}, problem {c['problem']}, max {c['activation']:.3g}",
                    [token_text(t) for t in c["token_ids"]],
                    list(c["acts"]),
                    marked=c["center"],
                )
            )
        sections.append((f"feature {feat}: {title}", rows))
    return render_tokens(sections, title="DiffSAE feature contexts", value_name="activation")


# -------------------------------------------------------------------------------------------- logit lens
def logit_lens_table(
    sae: TopKSAE, features: list[int], w_u: torch.Tensor, norm: Callable | None, token_text: Callable[[int], str], k=10
):
    """Top and bottom `k` tokens of each feature's decoder row through the unembedding `w_u` [vocab, d]
    (after the final `norm` when given): `mechsteer.readouts.logit_lens`'s dot-product lens."""
    import pandas as pd

    if not features:
        return pd.DataFrame(columns=["feature", "top_tokens", "bottom_tokens"])
    tv, ti, bv, bi = top_bottom(scores(sae.W_dec[features].detach().float().cpu(), w_u, "dot", norm), k)

    def fmt(ids, vals):
        return " | ".join(f"{token_text(int(t))!r}:{float(v):.2f}" for t, v in zip(ids, vals))

    rows = [
        {"feature": f, "top_tokens": fmt(ti[r], tv[r]), "bottom_tokens": fmt(bi[r], bv[r])}
        for r, f in enumerate(features)
    ]
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- report
@plain_labels
def plot_frequencies(df, path: Path, alpha: float, title: str) -> None:
    """Scatter each feature's firing frequency in correct against incorrect generations, the significant ones (BH q
    < alpha) in red (`frequencies.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    sig = (df["q_bh"] < alpha).to_numpy()
    ax.scatter(df["seq_freq_incorrect"][~sig], df["seq_freq_correct"][~sig], s=8, c="grey", label="not significant")
    ax.scatter(df["seq_freq_incorrect"][sig], df["seq_freq_correct"][sig], s=14, c="red", label=f"BH q < {alpha}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("fires in incorrect generations (fraction)")
    ax.set_ylabel("fires in correct generations (fraction)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def analyse_features(
    sae: TopKSAE,
    x: torch.Tensor,
    index,
    sequences: list[dict],
    out_dir: str | Path,
    *,
    token_text: Callable[[int], str] = str,
    w_u: torch.Tensor | None = None,
    norm: Callable | None = None,
    top_n: int = 10,
    n_contexts: int = 5,
    window: int = 8,
    lens_k: int = 10,
    alpha: float = 0.05,
    generated_only: bool = True,
    min_act_frac: float = 0.1,
    title: str = "DiffSAE features",
) -> dict:
    """Encode dF `x` (rows aligned with `index`), rank features, and write `features.csv`,
    `top_correct.csv`, `top_incorrect.csv`, `logit_lens.csv` (when the unembedding `w_u` is given, through the
    final `norm` when that is given too), `contexts.html`,
    `frequencies.png` and `summary.json` into `out_dir`. Returns {"table", "top_correct", "top_incorrect",
    "logit_lens", "summary"} (DataFrames and a dict)."""
    out_dir = Path(out_dir)
    enc = encode_tokens(sae, x)
    df = feature_stats(enc, index, generated_only=generated_only, min_act_frac=min_act_frac)
    top_c = df[df["freq_diff"] > 0].head(top_n)
    top_i = df[df["freq_diff"] < 0].sort_values(["freq_diff", "p_fisher"]).head(top_n)
    chosen = list(top_c["feature"]) + list(top_i["feature"])
    lens = None
    if w_u is not None:
        lens = logit_lens_table(sae, [int(f) for f in chosen], w_u, norm, token_text, lens_k)
        for name in ("top_tokens", "bottom_tokens"):
            m = dict(zip(lens["feature"], lens[name]))
            top_c = top_c.assign(**{name: top_c["feature"].map(m)})
            top_i = top_i.assign(**{name: top_i["feature"].map(m)})
    blocks, rows_by_token = [], token_rows(index)
    for label, part in (("more often in correct", top_c), ("more often in incorrect", top_i)):
        for _, r in part.iterrows():
            t = (
                f"{label}: correct {r['seq_freq_correct']:.2f} vs incorrect {r['seq_freq_incorrect']:.2f} of "
                f"generations, q = {r['q_bh']:.3g}"
            )
            blocks.append(
                (
                    int(r["feature"]),
                    t,
                    top_contexts(
                        enc,
                        index,
                        sequences,
                        int(r["feature"]),
                        n=n_contexts,
                        window=window,
                        generated_only=generated_only,
                        rows_by_token=rows_by_token,
                    ),
                )
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("features", df), ("top_correct", top_c), ("top_incorrect", top_i)):
        with atomic_path(out_dir / f"{name}.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp, index=False)
    if lens is not None:
        with atomic_path(out_dir / "logit_lens.csv", suffix=".csv") as tmp:
            lens.to_csv(tmp, index=False)
    atomic_write_text(out_dir / "contexts.html", contexts_html(blocks, token_text))
    if len(df):
        plot_frequencies(df, out_dir / "frequencies.png", alpha, title)
    best = df.iloc[0] if len(df) else None
    worst = df.sort_values("freq_diff").iloc[0] if len(df) else None
    summary = {
        **df.attrs,
        "n_features_live": len(df),
        "alpha": alpha,
        "n_significant": int((df["q_bh"] < alpha).sum()),
        "n_significant_correct": int(((df["q_bh"] < alpha) & (df["freq_diff"] > 0)).sum()),
        "n_significant_incorrect": int(((df["q_bh"] < alpha) & (df["freq_diff"] < 0)).sum()),
        "min_q": float(df["q_bh"].min()) if len(df) else None,
        "top_correct": None if best is None else _row(best),
        "top_incorrect": None if worst is None else _row(worst),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    return {"table": df, "top_correct": top_c, "top_incorrect": top_i, "logit_lens": lens, "summary": summary}


def _row(r) -> dict:
    keys = (
        "feature",
        "seq_freq_correct",
        "seq_freq_incorrect",
        "tok_freq_correct",
        "tok_freq_incorrect",
        "freq_diff",
        "p_fisher",
        "q_bh",
    )
    return {k: (int(r[k]) if k == "feature" else float(r[k])) for k in keys}
