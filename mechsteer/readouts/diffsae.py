"""The `diffsae` readout: runs `mechsteer.diffsae.run_diffsae` for one model x steered condition x seed.

The cell's work folder (`outputs/<study>/work/<cell>/`, kept across runs) holds the dF shards and the SAE
checkpoints, so an interrupted cell resumes; the cell record keeps what a reader needs: per layer the SAE in
SAELens' format, the feature tables (CSV), the coloured-token contexts (HTML), the frequency plot (PNG) and
the summary. Runs with the model unsteered (`steers_itself`): it applies the condition itself where the
steered model is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mechsteer.errors import MechsteerError
from mechsteer.generation import spec_sampling
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.prompts import load_problems
from mechsteer.safe_text import markdown_table
from mechsteer.spec.layers import resolve_layers_or_raise

RECORDED = (
    "summary.json",
    "top_correct.csv",
    "top_incorrect.csv",
    "logit_lens.csv",
    "contexts.html",
    "frequencies.png",
)
"""Files of each layer's `features/` folder copied into the cell."""


def run_diffsae_readout(task: MeasurementTask) -> MeasurementResult:
    """Run a DiffSAE analysis for the cell (sample, collect dF, train an SAE and rank features per layer) and record
    its summary metrics and files."""
    from mechsteer.diffsae.run import DiffSAEConfig, run_diffsae
    from mechsteer.diffsae.train import SAETrainConfig

    spec, lm = task.spec, task.lm
    if not task.interventions:
        raise MechsteerError(
            "diffsae compares the steered model with the base model, but this condition has no "
            "intervention (dF would be 0)",
            hint="restrict the readout to steered conditions with `conditions: [...]`",
        )
    layers = resolve_layers_or_raise(spec.layers, lm.shape.n_layers, "diffsae.layers", MechsteerError)
    sae = SAETrainConfig(**spec.sae.model_dump())
    config = DiffSAEConfig(
        sae=sae,
        template=spec.template,
        sampling=spec_sampling(lm, spec, task.seed),
        batch_size=spec.batch_size,
        grader=spec.grader,
        positions=spec.positions,
        max_shard_bytes=spec.max_shard_bytes,
        top_n=spec.top_n,
        n_contexts=spec.n_contexts,
        window=spec.window,
        lens_k=spec.lens_k,
        lens_through_norm=spec.lens_through_norm,
        alpha=spec.alpha,
        min_act_frac=spec.min_act_frac,
    )
    problems = load_problems(spec)
    stages = ["generate", "collect"] + [f"{s}:{layer}" for layer in layers for s in ("train", "features")]
    task.progress(0, len(stages))

    def progress(stage: str, info: dict) -> None:
        if stage in ("generate", "collect", "train", "features"):
            task.progress(1, None)

    work = task.work_dir or Path("outputs") / "work"
    summary = run_diffsae(lm, list(task.interventions), task.vectors, problems, layers, config, work, progress)
    metrics: dict[str, float] = {
        "n_sequences": float(summary["n_sequences"]),
        "accuracy": summary["accuracy"],
        "n_generated_tokens": float(summary["n_generated_tokens"]),
    }
    files: dict[str, bytes] = {"diffsae/summary.json": json.dumps(summary, indent=1, default=str).encode()}
    for layer in layers:
        info = summary["layers"][layer] if layer in summary["layers"] else summary["layers"][str(layer)]
        m, f = info["sae"], info["features"]
        metrics.update(
            {
                f"L{layer}/explained_variance": m.get("explained_variance", float("nan")),
                f"L{layer}/dead_frac": m.get("dead_fraction", float("nan")),
                f"L{layer}/n_significant": float(f["n_significant"]),
                f"L{layer}/min_q": f["min_q"] if f["min_q"] is not None else float("nan"),
            }
        )
        ldir = work / f"layer_{layer}"
        for name in RECORDED:
            p = ldir / "features" / name
            if p.is_file():
                files[f"diffsae/layer_{layer}/{name}"] = p.read_bytes()
        for p in sorted((ldir / "sae").glob("*")):
            if p.is_file():
                files[f"diffsae/layer_{layer}/sae/{p.name}"] = p.read_bytes()
    info = {"layers": layers, "work_dir": str(work), "saelens_format": "cfg.json + sae_weights.safetensors"}
    return MeasurementResult(metrics, [], files=files, info=info)


def report_section(results, out_dir: Path) -> list[str]:
    """One row per diffsae cell and layer: SAE quality, significant features, the best feature each way."""
    rows = []
    for c in results.recorded():
        if c["kind"] != "diffsae":
            continue
        f = results.store.dir(c["hash"]) / "diffsae" / "summary.json"
        if not f.is_file():
            continue
        s = json.loads(f.read_text())
        for layer, info in s["layers"].items():
            feats, sae = info["features"], info["sae"]
            best, worst = feats.get("top_correct") or {}, feats.get("top_incorrect") or {}
            rows.append(
                {
                    "model": c["model"],
                    "condition": c["condition"],
                    "seed": c["seed"],
                    "layer": int(layer),
                    "accuracy": f"{100 * s['accuracy']:.1f}%",
                    "sequences": s["n_sequences"],
                    "explained var.": f"{sae.get('explained_variance', float('nan')):.3f}",
                    "dead": f"{100 * sae.get('dead_fraction', float('nan')):.1f}%",
                    "significant": feats["n_significant"],
                    "min q": _num(feats.get("min_q")),
                    "top -> correct": _feature(best),
                    "top -> incorrect": _feature(worst),
                    "contexts": f"[html](../cells/{c['hash']}/diffsae/layer_{layer}/contexts.html)",
                }
            )
    if not rows:
        return []
    table = pd.DataFrame(rows)
    from mechsteer.atomic import atomic_write_text

    atomic_write_text(out_dir / "diffsae.csv", table.to_csv(index=False))
    return [
        "## DiffSAE: features of the steering-induced activation difference vs correctness",
        "",
        "Per cell and layer: the SAE's explained variance of dF and dead latents, the number of features whose "
        "firing frequency differs between correct and incorrect generations after Benjamini-Hochberg "
        "correction, and the feature with the largest difference each way (sequence-level firing rate "
        "correct / incorrect, q-value).",
        "",
        markdown_table(table, index=False),
        "",
        "File: `diffsae.csv`.",
        "",
    ]


def _num(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _feature(r: dict) -> str:
    if not r:
        return "-"
    return (
        f"#{r['feature']}: {100 * r['seq_freq_correct']:.0f}% / {100 * r['seq_freq_incorrect']:.0f}% "
        f"(q {r['q_bh']:.2g})"
    )
