"""The `non_english` readout kind: per vector row, the fraction of non-Latin-script tokens among the bottom-k
and top-k tokens of its logit lens, against the whole vocabulary (no forward pass). Classifier and counts:
`mechsteer.readouts.non_english`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, slug
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.logit_lens import scores
from mechsteer.readouts.non_english import script_table, vocab_baseline
from mechsteer.readouts.plots import line_plot
from mechsteer.readouts.teacher_forced import analysed_sets, rows_of, token_strings, unembedding

KIND = "non_english"


def run(task: MeasurementTask) -> MeasurementResult:
    """Record the fraction of non-Latin-script tokens among each row's top and bottom logit-lens tokens, with the
    vocabulary's own fraction as the baseline."""
    spec, lm = task.spec, task.lm
    sets = analysed_sets(task)
    if not sets:
        return MeasurementResult({}, [], info={"note": "the condition reads no vector set"})
    w_u, norm = unembedding(lm)
    tokens = token_strings(lm, w_u.shape[0])
    for i in getattr(lm.tokenizer, "all_special_ids", []):  # markers such as <|im_start|> are no script
        if 0 <= i < len(tokens):
            tokens[i] = ""
    parts, metrics = [], {}
    for name, vs in sets.items():
        rows = rows_of(vs, spec.layers, f"{KIND}.layers")
        stack = vs.vectors[rows]  # [n_layers, d] with zero rows where absent: index by layer
        sc = scores(stack, w_u, spec.metric, norm if spec.normed else None)
        t = script_table(sc, tokens, ks=spec.ks, labels=rows)
        parts.append(t.assign(vectors=name))
        for k in spec.ks:
            for end in ("top", "bottom"):
                sel = t[(t["k"] == min(k, len(tokens))) & (t["end"] == end)]
                metrics[f"{name}/k{k}/{end}_frac_non_latin"] = float(sel["frac_non_latin"].mean())
    base = vocab_baseline(tokens)
    metrics["vocab_frac_non_latin"] = float(base["frac_non_latin"].iloc[0])
    table = pd.concat(parts, ignore_index=True)
    cols = ["vectors"] + [c for c in table.columns if c != "vectors"]
    table = table[cols]
    script_cols = sorted(c for c in table.columns if c.startswith("n["))
    table[script_cols] = table[script_cols].fillna(0).astype(int)
    return MeasurementResult(
        metrics,
        [],
        files={f"{KIND}/scripts.csv": csv_bytes(table), f"{KIND}/vocab.csv": csv_bytes(base)},
        info={"vectors": sorted(sets), "metric": spec.metric, "normed": spec.normed},
    )


def report_section(results, out_dir: Path) -> list[str]:
    """The report's non-Latin-script section: those fractions per vector set, k and end, against the vocabulary's."""
    t = results.gather(KIND, "scripts.csv")
    if t.empty:
        return []
    t = t.drop_duplicates(["model", "vectors", "layer", "k", "end"])
    vocab = results.gather(KIND, "vocab.csv").drop_duplicates(["model"])
    atomic_write_text(out_dir / "non_english.csv", t.to_csv(index=False))
    short = (
        t.groupby(["model", "vectors", "k", "end"])["frac_non_latin"]
        .agg(["mean", "min", "max"])
        .reset_index()
        .rename(columns={"mean": "mean_frac_non_latin"})
    )
    lines = [
        "## Non-Latin scripts among the logit-lens tokens of the vectors",
        "",
        "Fraction of tokens in non-Latin scripts among each row's top-k and bottom-k logit-lens tokens "
        "(averaged over layers; per layer in `non_english.csv`); whole vocabulary: "
        + ", ".join(f"{r.model} {100 * r.frac_non_latin:.1f}%" for r in vocab.itertuples())
        + ".",
        "",
        md(short),
        "",
    ]
    for (model, vec, k), g in t.groupby(["model", "vectors", "k"]):
        base = vocab[vocab["model"] == model]["frac_non_latin"]
        p = line_plot(
            g.assign(layer=g["layer"].astype(int)),
            out_dir / f"non_english_{slug(model, vec, k)}.png",
            x="layer",
            y="frac_non_latin",
            hue="end",
            title=f"non-Latin fraction of top/bottom-{k} tokens: {vec} ({model})",
            bands={"vocabulary": float(base.iloc[0])} if len(base) else None,
        )
        lines += [f"![non-Latin {vec} k={k}]({p.name})", ""]
    lines += ["File: `non_english.csv` (per layer, k and end, with counts per script).", ""]
    return lines
