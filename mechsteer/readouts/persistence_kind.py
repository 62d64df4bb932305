"""The `persistence` readout kind (Figure 2): for each source layer l, sequences sampled under `add s_l` at l
alone (once per model, source condition and seed; shared through `work/sequences/`), teacher-forced with and
without it; dF at each target block j >= src streams into `PersistenceAccumulator` one chunk at a time (memory:
one chunk's residual streams, never samples x T x layers x d). Records the (source x target) table and the
DV / DD / LM / self heat-maps' data; the report draws them centred at 0."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, slug
from mechsteer.errors import MechsteerError
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.persistence import EXTRA, METRICS, PersistenceAccumulator, matrix
from mechsteer.readouts.plots import heatmap
from mechsteer.readouts.teacher_forced import (
    added_vector,
    chunks,
    counted_mask,
    kept_sequences,
    rows_of,
    shifts,
    single_layer,
)
from mechsteer.sequences import pad_id
from mechsteer.spec.layers import resolve_layers_or_raise

KIND = "persistence"
TITLES = {
    "dv": "Diff-Vector cos(dF_j, s_j)",
    "dd": "Diff-Diff",
    "lm": "layer-mean cos(mean dF_j, s_j)",
    "self_cos": "self cos(dF_j, s_l)",
}
DD_TITLES = {
    "sample": "Diff-Diff cos(dF_j,t, mean_t' dF_j of its sample)",
    "dataset": "Diff-Diff cos(dF_j,t, E_x[dF_j])",
}


def run(task: MeasurementTask) -> MeasurementResult:
    """Record, per source layer, how far the added vector's effect persists through the later blocks on sequences
    sampled under it."""
    spec, lm = task.spec, task.lm
    add, vname = added_vector(task, spec.vector)
    vs = task.vectors[vname]
    n, d = lm.shape.n_layers, lm.shape.d_model
    stack = torch.zeros(n, d)
    for i in vs.layers:
        if i < n:
            stack[i] = vs.row(i).float() * float(add.scale)
    sources = rows_of(vs, spec.sources, f"{KIND}.sources")
    targets = resolve_layers_or_raise(spec.targets, n, f"{KIND}.targets", MechsteerError)
    acc = PersistenceAccumulator(stack, spec.diff_diff_mean)
    task.progress(0, len(sources))
    n_seq = n_dropped = 0
    for src in sources:
        steer = single_layer(add, src)
        seqs, dropped = kept_sequences(task, steer)
        n_seq += len(seqs)
        n_dropped += dropped
        tj = [j for j in targets if j >= src]
        for ids, mask, _, _, _ in chunks(seqs, spec.batch_size, pad_id(lm.tokenizer), lm.device):
            m = counted_mask(mask).cpu()
            for j, dF in shifts(lm, steer, task.vectors, ids, mask, tj).items():
                acc.update(src, j, dF, m)
        task.progress(1, None)
    table = acc.finalize()
    metrics: dict[str, float] = {"n_sequences": float(n_seq), "n_unfinished_dropped": float(n_dropped)}
    diag = table[table["source"] == table["target"]]
    later = table[table["target"] > table["source"]]
    for m in (*METRICS, *EXTRA):
        metrics[f"diag_{m}"] = float(diag[m].mean())
        metrics[f"later_{m}"] = float(later[m].mean()) if len(later) else float("nan")
    return MeasurementResult(
        metrics,
        [],
        files={f"{KIND}/table.csv": csv_bytes(table)},
        info={"vector": vname, "sources": sources, "targets": targets, "diff_diff_mean": spec.diff_diff_mean},
    )


def report_section(results, out_dir: Path) -> list[str]:
    """The report's persistence section: the per-layer table and its figures."""
    t = results.gather(KIND, "table.csv")
    if t.empty:
        return []
    atomic_write_text(out_dir / "persistence.csv", t.to_csv(index=False))
    keys = ["model", "condition", "seed"]
    short = []
    pngs = []
    variants = {}  # (model, condition, seed) -> the Diff-Diff mean its cell used
    for c in results.recorded_cells(KIND):
        info = results.store.read_record(c["hash"]).get("info") or {}
        variants[(c["model"], c["condition"], c["seed"])] = info.get("diff_diff_mean", "sample")
    for key, g in t.groupby(keys):
        variant = variants.get(tuple(key), "sample")
        diag, later = g[g["source"] == g["target"]], g[g["target"] > g["source"]]
        last = g[g["target"] == g["target"].max()]
        short.append(
            dict(zip(keys, key, strict=True))
            | {
                "sources": g["source"].nunique(),
                "DV at j=l": diag["dv"].mean(),
                "DV j>l": later["dv"].mean(),
                "Diff-Diff mean": variant,
                "DD j>l": later["dd"].mean(),
                "DD(sample) j>l": later["dd_sample"].mean() if "dd_sample" in g else float("nan"),
                "DD(dataset) j>l": later["dd_dataset"].mean() if "dd_dataset" in g else float("nan"),
                "LM j>l": later["lm"].mean(),
                "self j>l": later["self_cos"].mean(),
                "self at last block": last["self_cos"].mean(),
            }
        )
        for metric in METRICS:
            mat = matrix(g, metric)
            mat.index.name, mat.columns.name = "source layer l", "target layer j"
            p = heatmap(
                mat,
                out_dir / f"persistence_{metric}_{slug(*key)}.png",
                title=f"{DD_TITLES[variant] if metric == 'dd' else TITLES[metric]}: {key[1]} ({key[0]}, seed {key[2]})",
                markers=[(i, i) for i in mat.index if i in mat.columns],
            )
            pngs.append(f"![{metric}]({p.name})")
    return [
        "## Persistence of single-layer vectors",
        "",
        "dF_j = h_j(add s_l at l) - h_j(base) on sequences sampled under s_l alone, teacher-forced; means over "
        "tokens (each sample's last token excluded) then samples. DV at j = l is 1 when the vector is added as "
        "is (dF_l = s_l). Blocks before the source are blank (dF = 0 by causality). Diff-Diff compares each "
        "token's dF with a mean shift: `sample` = its own sample's mean (the authors' code), `dataset` = E_x[dF] "
        "over all tokens (the paper's Figure 2 caption); both are in `persistence.csv`, the heat-map shows the "
        "readout's `diff_diff_mean`.",
        "",
        md(pd.DataFrame(short)),
        "",
        *[x for p in pngs for x in (p, "")],
        "File: `persistence.csv` (source x target, all metrics, token counts, mean ||dF||).",
        "",
    ]
