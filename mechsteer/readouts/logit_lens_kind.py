"""The `logit_lens` readout kind: top/bottom-k tokens of each vector row through the unembedding (without and
with the final norm), and optionally the effective unembedding bias u_l (the mean shift of the last block's
residual stream caused by s_l alone, from teacher-forced passes over sequences sampled under `add s_l` at l)
with its tokens and the cosine matrix across source layers (Figure 4). Pure parts:
`mechsteer.readouts.logit_lens`; passes: `mechsteer.readouts.teacher_forced`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, read_csv, slug
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.logit_lens import logit_lens, unembedding_bias
from mechsteer.readouts.persistence import PersistenceAccumulator
from mechsteer.readouts.plots import heatmap
from mechsteer.readouts.teacher_forced import (
    added_vector,
    analysed_sets,
    chunks,
    counted_mask,
    rows_of,
    sample_sequences,
    shifts,
    single_layer,
    token_strings,
    unembedding,
)
from mechsteer.sequences import pad_id

KIND = "logit_lens"


def run(task: MeasurementTask) -> MeasurementResult:
    """Record the logit lens of every analysed vector row and, with `unembedding_bias`, of the effective bias u_l."""
    spec, lm = task.spec, task.lm
    sets = analysed_sets(task)
    w_u, norm = unembedding(lm)
    tokens = token_strings(lm, w_u.shape[0])
    files: dict[str, bytes] = {}
    metrics: dict[str, float] = {}
    parts = []
    for name, vs in sets.items():
        rows = rows_of(vs, spec.layers, f"{KIND}.layers")
        stack = vs.vectors[rows]  # [n_layers, d] with zero rows where absent: index by layer
        parts.append(
            logit_lens(stack, w_u, tokens, k=spec.k, labels=rows, metrics=spec.metrics, norm=norm).assign(vectors=name)
        )
    if parts:
        files[f"{KIND}/tokens.csv"] = csv_bytes(pd.concat(parts, ignore_index=True))
    info: dict = {"vectors": sorted(sets)}
    if spec.unembedding_bias:
        u, sources, n_tokens = effective_bias(task)
        ub = unembedding_bias(u, w_u, tokens, k=spec.k, sources=sources, norm=norm)
        files[f"{KIND}/bias_tokens.csv"] = csv_bytes(ub["tokens"])
        files[f"{KIND}/bias_cosine.csv"] = csv_bytes(ub["cosine"], index=True)
        files[f"{KIND}/bias_norms.csv"] = csv_bytes(ub["norms"].assign(n_tokens=n_tokens))
        files[f"{KIND}/bias_vectors.csv"] = csv_bytes(
            pd.DataFrame(u.numpy(), index=pd.Index(sources, name="source")), index=True
        )
        metrics["bias/mean_norm"] = float(ub["norms"]["norm"].mean())
        info["bias_sources"] = sources
    return MeasurementResult(metrics, [], files=files, info=info)


def effective_bias(task) -> tuple[torch.Tensor, list[int], list[int]]:
    """(u [n_sources, d] float64, sources, tokens counted per source): for each source l, sequences sampled
    under `add s_l` at l alone, and the mean over their tokens of the last block's dF."""
    spec, lm = task.spec, task.lm
    add, vname = added_vector(task, spec.vectors[0] if spec.vectors and len(spec.vectors) == 1 else None)
    vs = task.vectors[vname]
    sources = rows_of(vs, spec.sources, f"{KIND}.sources")
    last = lm.shape.n_layers - 1
    acc = PersistenceAccumulator(torch.zeros(lm.shape.n_layers, lm.shape.d_model))
    task.progress(0, len(sources))
    for src in sources:
        steer = single_layer(add, src)
        seqs = sample_sequences(task, steer)
        for ids, mask, _, _, _ in chunks(seqs, spec.batch_size, pad_id(lm.tokenizer), lm.device):
            d = shifts(lm, steer, task.vectors, ids, mask, [last])[last]
            acc.update(src, last, d, counted_mask(mask).cpu())
        task.progress(1, None)
    u = torch.stack([acc.mean_shift(src, last) for src in sources])
    return u, sources, [acc._n_tokens[(src, last)] for src in sources]


def report_section(results, out_dir: Path) -> list[str]:
    """The report's logit-lens section: top and bottom tokens per row, and the u_l cosine heat-maps and tokens."""
    lines: list[str] = []
    t = results.gather(KIND, "tokens.csv")
    if not t.empty:
        t = t.drop_duplicates(["model", "vectors", "layer", "normed", "metric", "end", "rank"])
        atomic_write_text(out_dir / "logit_lens.csv", t.to_csv(index=False))
        sel = t[(t["metric"] == "cos") & (t["rank"] < 5)]
        short = (
            sel.groupby(["model", "vectors", "layer", "normed", "end"])["token"]
            .agg(lambda s: " ".join(repr(x) for x in s))
            .unstack("end")
            .reset_index()
        )
        short = short[~short["normed"]].drop(columns="normed")
        lines += [
            "## Logit lens of the vectors",
            "",
            "Top and bottom 5 tokens by cosine with the unembedding rows, per vector row (no final norm; "
            "all metrics, both ends, with and without the final norm in `logit_lens.csv`).",
            "",
            md(short),
            "",
        ]
    cells = results.recorded_cells(KIND)
    bias_rows, pngs = [], []
    for c in cells:
        cdir = results.store.dir(c["hash"]) / KIND
        if not (cdir / "bias_cosine.csv").is_file():
            continue
        cos = read_csv(cdir / "bias_cosine.csv", index_col=0)
        cos.columns = [int(x) for x in cos.columns]
        cos.index.name, cos.columns.name = "source layer", "source layer"
        p = heatmap(
            cos,
            out_dir / f"logit_lens_bias_cosine_{slug(c['model'], c['condition'], c['seed'])}.png",
            title=f"cos(u_l, u_l'): {c['condition']} ({c['model']}, seed {c['seed']})",
        )
        toks = read_csv(cdir / "bias_tokens.csv")
        toks = toks[(toks["metric"] == "cos") & (toks["rank"] < 5) & (~toks["normed"])]
        top = toks.groupby(["layer", "end"])["token"].agg(lambda s: " ".join(repr(x) for x in s)).unstack("end")
        nrm = read_csv(cdir / "bias_norms.csv").set_index("source")
        for src in top.index:
            bias_rows.append(
                {
                    "model": c["model"],
                    "condition": c["condition"],
                    "seed": c["seed"],
                    "source": src,
                    "norm u_l": nrm.loc[src, "norm"],
                    "tokens": nrm.loc[src, "n_tokens"],
                    "top": top.loc[src, "top"],
                    "bottom": top.loc[src, "bottom"],
                }
            )
        pngs += [f"![u_l cosine]({p.name})", ""]
    if bias_rows:
        b = pd.DataFrame(bias_rows)
        atomic_write_text(out_dir / "logit_lens_bias.csv", b.to_csv(index=False))
        lines += [
            "### Effective unembedding bias u_l",
            "",
            "u_l = mean over teacher-forced tokens of the last block's residual shift caused by s_l alone "
            "(sequences sampled under `add s_l` at l). Top/bottom 5 tokens by cosine; the heat-maps show "
            "cos(u_l, u_l') across source layers.",
            "",
            md(b),
            "",
            *pngs,
        ]
    if lines:
        lines += ["Files: `logit_lens.csv`" + (", `logit_lens_bias.csv`" if bias_rows else "") + ".", ""]
    return lines
