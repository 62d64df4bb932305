"""Teacher-forced replay vs full forward for a last-block sweep of all query heads, measured in one run.

The sweep is the paper's per-head analysis of the last block (section 4.6): one `head` condition per query
head (Skip-Head of head h on the last block, s = a random vector in the penultimate row). Each condition is
evaluated on the same teacher-forced batch twice: by a full uncached forward, and by `mechsteer.replay`
from the last block (the base pass's block input and kwargs recorded once). Sweeps alternate (full, replay,
full, replay, ...) so load drift hits both; the figure is the ratio of median sweep times. The recording
pass is reported separately and also folded into a second ratio. Every replayed condition is checked
against its full forward (max |diff| over the logits, float32).

Usage: python benchmarks/replay.py [--batch 1] [--tokens 128 1024] [--repeats 3] [--threads 1]
Writes benchmarks/results/replay.md and benchmarks/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from mechsteer.atomic import atomic_write_text
from mechsteer.interventions import steering
from mechsteer.models.loading import load_model
from mechsteer.replay import earliest_block, record, replay
from mechsteer.spec.kinds.circuit import HeadSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors import VectorSet

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"


def measure(lm, batch: int, tokens: int, repeats: int, scored: int | None = None) -> dict:
    """Median sweep times (full vs replay) for one batch shape, plus the replay-vs-full max |diff|."""
    model, ad, sh = lm.model, lm.adapter, lm.shape
    last = sh.n_layers - 1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens), generator=g)
    mask = torch.ones_like(ids)
    vs = VectorSet(torch.randn(sh.n_layers, sh.d_model, generator=g) * 2.0, [last - 1])
    vectors = {"v": vs}
    conditions = [[HeadSpec(kind="head", vector="v", layer=last, heads=[h])] for h in range(sh.n_heads)]
    assert all(earliest_block(c, sh.n_layers, vectors) == last for c in conditions)

    def full(c):
        with torch.no_grad(), steering(model, ad, c, vectors):
            return model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=scored or 0).logits

    def replayed(c, state):
        with steering(model, ad, c, vectors):
            return replay(model, ad, state, keep_last=scored)

    # correctness (untimed): every replayed condition against its full forward
    base_logits, states = record(model, ad, [last], input_ids=ids, attention_mask=mask)
    if scored:
        base_logits = base_logits[:, -scored:]
    max_diff, changed = 0.0, float("inf")
    for c in conditions:
        want = full(c)
        max_diff = max(max_diff, float((replayed(c, states[last]) - want).abs().max()))
        changed = min(changed, float((want - base_logits).abs().max()))
    del base_logits, want
    # timing: alternating sweeps; each condition's logits are dropped at once, as a streaming readout would
    full_t, replay_t, record_t = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in conditions:
            full(c)
        full_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, states = record(model, ad, [last], input_ids=ids, attention_mask=mask)
        record_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in conditions:
            replayed(c, states[last])
        replay_t.append(time.perf_counter() - t0)
    f, r, rec = statistics.median(full_t), statistics.median(replay_t), statistics.median(record_t)
    print(f"tokens {tokens} (scored {scored or tokens}): full {f:.3f}s, replay {r:.3f}s, ratio {f / r:.2f}")
    return {
        "tokens": tokens,
        "scored": scored or tokens,
        "full_sweep_s": full_t,
        "replay_sweep_s": replay_t,
        "record_s": record_t,
        "median_full_s": f,
        "median_replay_s": r,
        "median_record_s": rec,
        "ratio": f / r,
        "ratio_with_record": f / (r + rec),
        "max_abs_diff": max_diff,
        "min_change_vs_base": changed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--scored",
        type=float,
        nargs="+",
        default=[1.0, 0.5],
        help="Fractions of the positions whose logits both sides compute (1 = all; 0.5 = the last "
        "half, the generated part a teacher-forced readout scores)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype="float32", device="cpu"))
    runs = [
        measure(lm, args.batch, t, args.repeats, None if f >= 1 else max(1, int(t * f)))
        for t in args.tokens
        for f in args.scored
    ]
    sh = lm.shape
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    res = {
        "model": "smollm2-135m",
        "dtype": "float32",
        "n_layers": sh.n_layers,
        "n_heads": sh.n_heads,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": machine,
        "runs": runs,
    }
    cmd = "PYTHONPATH=$PWD python benchmarks/replay.py " + " ".join(sys.argv[1:])
    md = (
        [
            "## Teacher-forced replay (benchmarks/replay.py)",
            "",
            f"Command: `{cmd.strip()}`",
            "",
            f"SmolLM2-135M-Instruct, float32, CPU ({args.threads} thread(s); {machine['cpus']} CPUs shared with other "
            f"jobs, {machine['platform']}, torch {torch.__version__}). Sweep: one `head` (Skip-Head) condition per "
            f"query head of the last block ({sh.n_heads} conditions; s = a random vector in the penultimate row), "
            f"batch {args.batch}, median of {args.repeats} alternating sweeps per setting. Target: replay >= 5x "
            "faster than the full forward. Both sides compute logits at the same positions: all of them, or only "
            "the scored ones (the last part of a teacher-forced sequence, the generated tokens a readout scores; "
            "transformers' `logits_to_keep` on the full side, `keep_last` on the replay side). The final norm and "
            "the 49,152-row unembedding cost as much as several decoder blocks here, so unembedding every "
            "position bounds the speed-up at short lengths.",
            "",
            "| tokens | scored positions | full sweep (s) | replay sweep (s) | recording pass (s) | speed-up "
            "| speed-up incl. recording | max abs diff (float32) | min change vs base |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        + [
            f"| {r['tokens']} | {r['scored']} | {r['median_full_s']:.3f} | {r['median_replay_s']:.3f} | {r['median_record_s']:.3f} "
            f"| **{r['ratio']:.2f}x** | {r['ratio_with_record']:.2f}x | {r['max_abs_diff']:.1e} "
            f"| {r['min_change_vs_base']:.2f} |"
            for r in runs
        ]
        + [""]
    )
    OUT.mkdir(exist_ok=True)
    atomic_write_text(OUT / "replay.md", "\n".join(md))
    atomic_write_text(OUT / "replay.json", json.dumps(res, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
