"""Steered vs unsteered generation throughput on the embedded model, measured in one run.

Same prompts, same batch, same number of new tokens (min_new_tokens = max_new_tokens, so steering cannot
shorten the work), greedy. Runs alternate (base, steered, base, steered, ...) so drift in machine load hits
both sides; the reported figure is the ratio of median tokens/s. Conditions: `add` on all 30 layers at all
positions (the paper's setup), and `add` with a position selector (needs the position tracker).

Usage: python benchmarks/steering_overhead.py [--repeats 5] [--new-tokens 64] [--batch 8]
Writes benchmarks/results/steering_overhead.{md,json}; `python benchmarks/collect.py` rebuilds results.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mechsteer.generation import render_prompts, tokenize
from mechsteer.interventions import steering
from mechsteer.models.loading import load_model
from mechsteer.spec.interventions import AddSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors import VectorSet

HERE = Path(__file__).resolve().parent
PROMPTS = [f"What is {a} + {b}?" for a, b in [(3, 4), (7, 8), (12, 5), (9, 9), (25, 17), (6, 1), (40, 2), (13, 13)]]


def timed_generate(lm, enc, ctx, new_tokens: int) -> float:
    if ctx is not None:
        ctx.begin()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    dt = time.perf_counter() - t0
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return out.shape[0] * new_tokens / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype=args.dtype, device="cpu"))
    prompts = (PROMPTS * ((args.batch + len(PROMPTS) - 1) // len(PROMPTS)))[: args.batch]
    enc = tokenize(lm, render_prompts(lm, prompts, "qwen_math"))
    g = torch.Generator().manual_seed(0)
    vs = VectorSet(torch.randn(lm.shape.n_layers, lm.shape.d_model, generator=g) * 0.05, list(range(lm.shape.n_layers)))
    conditions = {
        "add, all layers, all positions": [AddSpec(vector="v")],
        "add, all layers, generated positions": [AddSpec(vector="v", positions="generated")],
    }
    timed_generate(lm, enc, None, 8)  # warm-up
    rows = []
    for name, spec in conditions.items():
        base, steered = [], []
        for _ in range(args.repeats):
            base.append(timed_generate(lm, enc, None, args.new_tokens))
            with steering(lm.model, lm.adapter, spec, {"v": vs}) as ctx:
                steered.append(timed_generate(lm, enc, ctx, args.new_tokens))
        b, s = statistics.median(base), statistics.median(steered)
        rows.append((name, b, s, s / b))
        print(f"{name}: unsteered {b:.1f} tok/s, steered {s:.1f} tok/s, ratio {s / b:.3f}")
    lines = [
        "## Steering overhead (benchmarks/steering_overhead.py)",
        "",
        f"SmolLM2-135M-Instruct, {args.dtype}, CPU ({torch.get_num_threads()} threads), batch {args.batch}, "
        f"{args.new_tokens} new tokens, greedy; median of {args.repeats} alternating runs each. Target ratio >= 0.98.",
        "",
        "| condition | unsteered tok/s | steered tok/s | ratio |",
        "|---|---|---|---|",
    ] + [f"| {n} | {b:.1f} | {s:.1f} | {r:.3f} |" for n, b, s, r in rows] + [""]
    from _sections import command_line, machine_facts, write_section

    lines[1:1] = ["", f"Command: `{command_line()}`. Machine: {machine_facts()}."]
    raw = {"settings": vars(args), "rows": [{"condition": n, "unsteered_tok_s": b, "steered_tok_s": s, "ratio": r}
                                            for n, b, s, r in rows]}
    print(f"wrote {write_section('steering_overhead', chr(10).join(lines), raw)}")


if __name__ == "__main__":
    main()
