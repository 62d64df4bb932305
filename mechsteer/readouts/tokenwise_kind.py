"""The `tokenwise` readout kind (Appendix S): sequences sampled under a `lora1` condition, teacher-forced once
under it; per adapted layer and position alpha_t, ||m_t|| and cos(m_t, B^) (`ctx.extras["lora1"]`), labelled by
prompt segment; per-layer and per-segment summaries (alpha normalised by the layer's mean MLP-output norm,
sign-flipped to a positive mean), Pearson r of alpha_t vs cos(m_t, B^), and layer x position heat-maps with the
segment borders. Tables: `mechsteer.readouts.tokenwise`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.cell_tables import csv_bytes, md, read_csv, slug
from mechsteer.errors import MechsteerError
from mechsteer.interventions import steering
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.plots import heatmap
from mechsteer.readouts.teacher_forced import (
    chunks,
    sample_sequences,
)
from mechsteer.readouts.tokenwise import (
    alpha_matrix,
    chat_markers,
    layer_summary,
    segment_borders,
    segment_labels,
    segment_summary,
    tokenwise_rows,
)
from mechsteer.sequences import pad_id

KIND = "tokenwise"


@torch.no_grad()
def run(task: MeasurementTask) -> MeasurementResult:
    """The tokenwise readout of one cell: alpha_t, ||m_t|| and cos(m_t, B^) per layer and position."""
    spec, lm = task.spec, task.lm
    cond = list(task.interventions)
    if not any(getattr(iv, "kind", None) == "lora1" for iv in cond):
        raise MechsteerError(
            "tokenwise reads lora1's token-wise magnitude, but this condition has no lora1",
            hint="restrict the readout with `conditions:` to lora1 conditions",
        )
    seqs = sample_sequences(task, cond)
    parts, borders_of = [], {}
    task.progress(0, len(seqs))
    with steering(lm.model, lm.adapter, cond, task.vectors, tokenizer=lm.tokenizer) as ctx:
        for ids, mask, _, sids, part in chunks(seqs, spec.batch_size, pad_id(lm.tokenizer), lm.device):
            segs = []
            for sid, q in zip(sids, part):
                try:
                    toks = lm.tokenizer.convert_ids_to_tokens(q.ids[: q.prompt_length])
                    b = segment_borders(toks, prompt_length=q.prompt_length, **chat_markers(toks))
                    borders_of[sid] = b
                    segs.append(segment_labels(len(q.ids), b))
                except ValueError:  # not a chat prompt: prompt vs generation only
                    segs.append(["problem"] * q.prompt_length + ["generation"] * (len(q.ids) - q.prompt_length))
            ctx.begin()
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
            for layer, rec in sorted(ctx.extras.get("lora1", {}).items()):
                parts.append(
                    tokenwise_rows(
                        layer, rec["alpha"], rec["mlp_norm"], rec["cos"], mask.cpu(), sample_ids=sids, segments=segs
                    )
                )
            task.progress(len(sids), None)
    rows = pd.concat(parts, ignore_index=True)
    ls, ss = layer_summary(rows), segment_summary(rows)
    files = {
        f"{KIND}/rows.csv": csv_bytes(rows),
        f"{KIND}/layers.csv": csv_bytes(ls),
        f"{KIND}/segments.csv": csv_bytes(ss),
        f"{KIND}/borders.csv": csv_bytes(pd.DataFrame([{"sample": s, **b} for s, b in borders_of.items()])),
    }
    metrics = {
        "n_tokens": float(len(rows) / max(rows["layer"].nunique(), 1)),
        "mean_abs_alpha_norm": float(ls["mean_abs_alpha_norm"].mean()),
        "pearson_r_alpha_cos": float(ls["pearson_r_alpha_cos"].mean()),
    }
    return MeasurementResult(metrics, [], files=files, info={"layers": sorted(rows["layer"].unique().tolist())})


def report_section(results, out_dir: Path) -> list[str]:
    """The report's tokenwise section: per-layer and per-segment tables and alpha heat-maps."""
    ls = results.gather(KIND, "layers.csv")
    if ls.empty:
        return []
    ss = results.gather(KIND, "segments.csv")
    atomic_write_text(out_dir / "tokenwise_layers.csv", ls.to_csv(index=False))
    atomic_write_text(out_dir / "tokenwise_segments.csv", ss.to_csv(index=False))
    seg = ss.pivot_table(
        index=["model", "condition", "seed", "layer"], columns="segment", values="mean_alpha_norm"
    ).reset_index()
    lines = [
        "## Token-wise magnitude of lora1",
        "",
        "alpha_t (lora1's scalar on B^) normalised by the layer's mean MLP-output norm and sign-flipped to a "
        "positive mean; Pearson r of alpha_t vs cos(m_t, B^).",
        "",
        md(ls.drop(columns=["cell"])),
        "",
        "Mean normalised alpha per prompt segment:",
        "",
        md(seg),
        "",
    ]
    for c in results.recorded_cells(KIND):
        cdir = results.store.dir(c["hash"]) / KIND
        if not (cdir / "rows.csv").is_file():
            continue
        rows = read_csv(cdir / "rows.csv")
        borders = read_csv(cdir / "borders.csv") if (cdir / "borders.csv").stat().st_size > 1 else pd.DataFrame()
        n = _spec_samples(results, c)
        for s in sorted(rows["sample"].unique())[:n]:
            mat = alpha_matrix(rows, s)
            b = borders[borders["sample"] == s] if len(borders) else borders
            cuts = ("system_end", "header_end", "problem_end", "prompt_end")
            vl = [int(b.iloc[0][k]) for k in cuts] if len(b) else []
            p = heatmap(
                mat,
                out_dir / f"tokenwise_{slug(c['model'], c['condition'], c['seed'], s)}.png",
                title=f"normalised alpha_t: {c['condition']} sample {s}",
                xlabel="position",
                ylabel="layer",
                vlines=vl,
                annotate=False,
            )
            lines += [f"![alpha sample {s}]({p.name})", ""]
    lines += ["Files: `tokenwise_layers.csv`, `tokenwise_segments.csv`; per cell `tokenwise/rows.csv`.", ""]
    return lines


def _spec_samples(results, cell: dict) -> int:
    """`heatmap_samples` of the readout as the cell ran it (`Results.measurement_spec`)."""
    return int(results.measurement_spec(cell).get("heatmap_samples", 2))
