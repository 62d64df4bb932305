"""`run_diffsae`: generate + grade -> collect dF -> train one TopK SAE per layer -> rank features."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.diffsae.collect import collect_diffs, generate_and_grade, load_index, load_layer, load_sequences
from mechsteer.diffsae.features import analyse_features
from mechsteer.diffsae.train import SAETrainConfig, TokenSource, train_sae
from mechsteer.generation import model_sampling
from mechsteer.models.loading import LoadedModel
from mechsteer.readouts.teacher_forced import unembedding
from mechsteer.sequences import SamplingSettings


@dataclass(frozen=True)
class DiffSAEConfig:
    """Everything a DiffSAE analysis can be tuned by: the SAE's training, how completions are sampled and graded,
    the collection's shards, and how many features, contexts and logit-lens tokens the report shows."""

    sae: SAETrainConfig = field(default_factory=SAETrainConfig)
    template: str = "qwen_math"
    sampling: SamplingSettings | None = None
    """How the completions are sampled; None: 64 new tokens at temperature 1, one per problem, seed 0, 16
    prompts per batch, stopping at the model's stop tokens."""
    batch_size: int = 16
    """Sequences per teacher-forced batch of the collection."""
    grader: str = "lenient"
    positions: str = "all"
    """Tokens whose dF is stored: all, or generated only (features are always ranked on generated tokens)."""
    max_shard_bytes: int = 64 * 2**20
    top_n: int = 10
    n_contexts: int = 5
    window: int = 8
    lens_k: int = 10
    lens_through_norm: bool = True
    alpha: float = 0.05
    min_act_frac: float = 0.1
    """A feature fires on a token when its activation exceeds this fraction of its largest activation."""


def run_diffsae(
    lm: LoadedModel,
    condition: list,
    vectors: dict,
    problems: list[dict],
    layers: list[int],
    config: DiffSAEConfig,
    out_dir: str | Path,
    progress: Callable[[str, dict], None] | None = None,
) -> dict:
    """Run the whole DiffSAE analysis into `out_dir`; steps whose output exists are reused (the collection
    folder and each layer's finished SAE), SAE training resumes from its checkpoints. Returns the summary
    (also written to `summary.json`). Reuse is only as sound as `out_dir`'s key: the engine passes the cell's
    work folder (`work/<cell hash>/<code digest>/`, emptied when the cell is forced), so it never holds
    what other settings, other code or an earlier forced-over run wrote.

    The model must be unsteered when this is called (no condition's hooks active): it runs the base model
    itself and applies `condition` only where the steered model is needed."""
    out_dir = Path(out_dir)
    say = progress or (lambda stage, info: None)
    timings: dict[str, float] = {}
    coll = out_dir / "collection"
    t0 = time.perf_counter()
    if not (coll / "manifest.json").is_file():
        say("generate", {"problems": len(problems)})
        sampling = config.sampling or model_sampling(lm, max_new_tokens=64, temperature=1.0, batch_size=16)
        seqs = generate_and_grade(
            lm, condition, vectors, problems, sampling, template=config.template, grader=config.grader
        )
        timings["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        say("collect", {"sequences": len(seqs)})
        collect_diffs(
            lm,
            condition,
            vectors,
            seqs,
            layers,
            coll,
            positions=config.positions,
            max_shard_bytes=config.max_shard_bytes,
            batch_size=config.batch_size,
            info={"config": asdict(config)},
        )
        timings["collect_s"] = time.perf_counter() - t0
    index, sequences = load_index(coll), load_sequences(coll)
    seq_correct = [s["correct"] for s in sequences]
    tok = lm.tokenizer
    token_text = lambda t: tok.decode([t])  # noqa: E731
    w_u, final_norm = unembedding(lm)
    norm = final_norm if config.lens_through_norm else None
    per_layer = {}
    for layer in layers:
        t0 = time.perf_counter()
        ldir = out_dir / f"layer_{layer}"
        say("train", {"layer": layer})
        res = train_sae(
            TokenSource.from_collection(coll, layer),
            config.sae,
            ldir,
            metadata={
                "model_name": lm.spec.id,
                "hook_name": f"model.layers.{layer}.output",
                "hook_layer": layer,
                "mechsteer_input": "dF = h(steered) - h(base)",
            },
            progress=lambda step, total, rec, layer=layer: say(
                "train_step", {"layer": layer, "step": step, "total": total, **rec}
            ),
        )
        timings[f"train_{layer}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        say("features", {"layer": layer})
        x = load_layer(coll, layer)
        feats = analyse_features(
            res.sae,
            x,
            index,
            sequences,
            ldir / "features",
            token_text=token_text,
            w_u=w_u,
            norm=norm,
            top_n=config.top_n,
            n_contexts=config.n_contexts,
            window=config.window,
            lens_k=config.lens_k,
            alpha=config.alpha,
            min_act_frac=config.min_act_frac,
            title=f"{lm.spec.id} layer {layer}: DiffSAE features vs correctness",
        )
        timings[f"features_{layer}_s"] = time.perf_counter() - t0
        df_norm = x.norm(dim=-1)
        gen = torch.tensor(index["is_generated"].to_numpy(bool).copy())
        per_layer[layer] = {
            "sae": {k: v for k, v in res.metrics.items() if k != "config"},
            "dF_norm_mean": float(df_norm.mean()),
            "dF_norm_mean_generated": float(df_norm[gen].mean()) if gen.any() else None,
            "features": feats["summary"],
        }
    gen_len = {c: [len(s["generated_ids"]) for s in sequences if s["correct"] is c] for c in (True, False)}
    summary = {
        "n_sequences": len(sequences),
        "n_correct": sum(1 for c in seq_correct if c),
        "mean_gen_tokens_correct": sum(gen_len[True]) / max(len(gen_len[True]), 1),
        "mean_gen_tokens_incorrect": sum(gen_len[False]) / max(len(gen_len[False]), 1),
        "accuracy": sum(1 for c in seq_correct if c) / max(len(sequences), 1),
        "n_tokens": int(len(index)),
        "n_generated_tokens": int(index["is_generated"].sum()),
        "layers": per_layer,
        "timings_s": timings,
        "config": asdict(config),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary
