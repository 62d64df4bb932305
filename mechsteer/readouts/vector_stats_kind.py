"""The `vector_stats` readout kind: norms, cosine matrix, singular values and stable rank of each vector set
the cell's condition reads (no forward pass), and in the report the per-layer alignment of every two analysed
sets of one shape on one model. Statistics: `mechsteer.readouts.vector_stats`."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pandas as pd
import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, read_csv, slug
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.plots import heatmap, line_plot
from mechsteer.readouts.teacher_forced import (
    analysed_sets,
    rows_of,
)
from mechsteer.readouts.vector_stats import alignment, vector_stats

KIND = "vector_stats"


def run(task: MeasurementTask) -> MeasurementResult:
    """The vector_stats readout of one cell: norms, cosines, singular values of each analysed set."""
    sets = analysed_sets(task)
    metrics: dict[str, float] = {}
    files: dict[str, bytes] = {}
    norms, summary, svals = [], [], []
    for name, vs in sets.items():
        rows = rows_of(vs, task.spec.layers, f"{KIND}.layers")
        stack = vs.vectors[rows]  # [n_layers, d] with zero rows where absent: index by layer
        st = vector_stats(stack, labels=rows)
        norms.append(st["norms"].assign(vectors=name))
        summary.append(st["summary"].assign(vectors=name))
        svals.append(st["singular_values"].assign(vectors=name))
        files[f"{KIND}/cosine_{slug(name)}.csv"] = csv_bytes(st["cosine"], index=True)
        files[f"{KIND}/stack_{slug(name)}.csv"] = csv_bytes(
            pd.DataFrame(stack.double().numpy(), index=pd.Index(rows, name="layer")), index=True
        )
        metrics[f"{name}/stable_rank"] = float(st["summary"]["stable_rank"].iloc[0])
        metrics[f"{name}/mean_norm"] = float(st["summary"]["mean_norm"].iloc[0])
    if sets:
        files[f"{KIND}/norms.csv"] = csv_bytes(pd.concat(norms, ignore_index=True))
        files[f"{KIND}/summary.csv"] = csv_bytes(pd.concat(summary, ignore_index=True))
        files[f"{KIND}/singular_values.csv"] = csv_bytes(pd.concat(svals, ignore_index=True))
    info = {"vectors": sorted(sets)} if sets else {"vectors": [], "note": "the condition reads no vector set"}
    return MeasurementResult(metrics, [], files=files, info=info)


def report_section(results, out_dir: Path) -> list[str]:
    """The report's vector_stats section: summaries, norms and the alignment of sets of one shape."""
    summary = results.gather(KIND, "summary.csv")
    if summary.empty:
        return []
    summary = summary.drop_duplicates(["model", "vectors"])
    norms = results.gather(KIND, "norms.csv").drop_duplicates(["model", "vectors", "layer"])
    atomic_write_text(out_dir / "vector_stats.csv", summary.to_csv(index=False))
    atomic_write_text(out_dir / "vector_stats_norms.csv", norms.to_csv(index=False))
    lines = [
        "## Vector statistics",
        "",
        "Per vector set: stable rank sum(s^2)/s_1^2 (1 = all rows parallel, n = orthogonal rows of equal norm), "
        "mean norm and mean off-diagonal cosine between layers.",
        "",
        md(summary[["model", "vectors", "n_rows", "stable_rank", "mean_norm", "mean_offdiag_cos"]]),
        "",
    ]
    png = line_plot(
        norms.assign(series=norms["model"] + ":" + norms["vectors"]),
        out_dir / "vector_stats_norms.png",
        x="layer",
        y="norm",
        hue="series",
        title="vector norm per layer",
    )
    lines += [f"![norms]({png.name})", ""]
    stacks: dict[tuple, pd.DataFrame] = {}
    want_align = False
    for c in results.recorded_cells(KIND):
        want_align = want_align or _spec_field(results, c, "align", True)
        cdir = results.store.dir(c["hash"]) / KIND
        for name in read_csv(cdir / "summary.csv")["vectors"] if (cdir / "summary.csv").is_file() else []:
            key = (c["model"], name)
            if key in stacks:
                continue
            cos = read_csv(cdir / f"cosine_{slug(name)}.csv", index_col=0)
            cos.columns = [int(x) for x in cos.columns]
            p = heatmap(
                cos,
                out_dir / f"vector_stats_cosine_{slug(*key)}.png",
                title=f"cos between layers: {name} ({c['model']})",
                xlabel="layer",
                ylabel="layer",
            )
            lines += [f"![cosine {name}]({p.name})", ""]
            stacks[key] = read_csv(cdir / f"stack_{slug(name)}.csv", index_col=0)
    if want_align:
        rows = []
        for (ka, a), (kb, b) in combinations(stacks.items(), 2):
            if ka[0] != kb[0] or a.shape != b.shape or list(a.index) != list(b.index):
                continue
            al = alignment(torch.tensor(a.to_numpy()), torch.tensor(b.to_numpy()), labels=list(a.index))
            rows.append(al.assign(model=ka[0], a=ka[1], b=kb[1]))
        if rows:
            cols = ["model", "a", "b", "layer", "cos", "norm_a", "norm_b", "norm_ratio"]
            al = pd.concat(rows, ignore_index=True)[cols]
            atomic_write_text(out_dir / "vector_stats_alignment.csv", al.to_csv(index=False))
            short = (
                al.groupby(["model", "a", "b"])
                .agg(mean_cos=("cos", "mean"), min_cos=("cos", "min"), mean_norm_ratio=("norm_ratio", "mean"))
                .reset_index()
            )
            lines += ["Alignment of vector sets of one shape (per-layer cosine, averaged):", "", md(short), ""]
    lines += [
        "Files: `vector_stats.csv`, `vector_stats_norms.csv`"
        + (", `vector_stats_alignment.csv`" if (out_dir / "vector_stats_alignment.csv").is_file() else "")
        + "; per cell: `cells/<hash>/vector_stats/` (cosine matrices, singular values, the stacks).",
        "",
    ]
    return lines


def _spec_field(results, cell: dict, field: str, default):
    """A field of the readout's spec as the cell ran it (`Results.measurement_spec`)."""
    return results.measurement_spec(cell).get(field, default)
