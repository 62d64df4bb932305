"""float32 vs bfloat16 on the CPU for the embedded SmolLM2-135M-Instruct, in one run: what `dtype: auto`
decides (models.dtype.resolve_dtype) and why.

Measures, alternating the two dtypes `--rounds` times so machine noise hits both alike:
* prefill: one forward pass over a batch of 16 x 100 tokens (random ids, no padding), seconds;
* batched generation: 16 short chat prompts, greedy, exactly `--new-tokens` new tokens each (min = max),
  generated tokens per second.
Reports medians, the float32/bfloat16 ratios, the CPU's bf16 flags and what `auto` picks on this machine.

    python benchmarks/cpu_dtype.py [--rounds 3] [--new-tokens 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section

setup_env()

import torch  # noqa: E402

from mechsteer.generation import render_prompts, tokenize  # noqa: E402
from mechsteer.models.dtype import resolve_dtype  # noqa: E402
from mechsteer.models.loading import load_model  # noqa: E402
from mechsteer.spec.models import ModelSpec  # noqa: E402

PROMPTS = [f"What is {a} + {b}?" for a in (3, 12, 25, 40) for b in (4, 9, 17, 30)]


@torch.no_grad()
def prefill_seconds(lm, ids) -> float:
    t0 = time.perf_counter()
    lm.model(ids)
    return time.perf_counter() - t0


@torch.no_grad()
def generation_tps(lm, enc, new_tokens: int) -> float:
    t0 = time.perf_counter()
    out = lm.model.generate(
        **enc,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=lm.tokenizer.pad_token_id,
    )
    dt = time.perf_counter() - t0
    assert out.shape[1] - enc["input_ids"].shape[1] == new_tokens
    return out.shape[0] * new_tokens / dt


def verdict(faster: str, auto_name: str) -> str:
    if faster == "mixed":
        return (
            f"- prefill and generation disagree on the faster dtype here; `auto` picked {auto_name} (the rule "
            "is by CPU capability, not by this measurement)"
        )
    return f"- `auto` picked {'the faster' if faster == auto_name else 'the SLOWER'} dtype on this machine"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    auto_name, auto_reason = resolve_dtype("auto", "cpu")
    models = {
        d: load_model("smol", ModelSpec(id="smollm2-135m", dtype=d, device="cpu")) for d in ("float32", "bfloat16")
    }
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (16, 100), generator=g)
    encs = {d: tokenize(lm, render_prompts(lm, PROMPTS, "qwen_math")) for d, lm in models.items()}
    for d, lm in models.items():  # warm-up (first-call allocations, kernel selection)
        prefill_seconds(lm, ids[:2, :20])
        generation_tps(lm, {k: v[:2] for k, v in encs[d].items()}, 2)
    prefill = {d: [] for d in models}
    gen = {d: [] for d in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for d in order:
            prefill[d].append(prefill_seconds(models[d], ids))
            gen[d].append(generation_tps(models[d], encs[d], args.new_tokens))
            print(f"round {r + 1} {d}: prefill {prefill[d][-1]:.2f} s, generation {gen[d][-1]:.1f} tok/s", flush=True)
    med_p = {d: statistics.median(v) for d, v in prefill.items()}
    med_g = {d: statistics.median(v) for d, v in gen.items()}
    prefill_ratio = med_p["bfloat16"] / med_p["float32"]  # > 1: bf16 slower
    gen_ratio = med_g["float32"] / med_g["bfloat16"]  # > 1: float32 faster
    faster = (
        "float32"
        if prefill_ratio > 1 and gen_ratio > 1
        else ("bfloat16" if prefill_ratio < 1 and gen_ratio < 1 else "mixed")
    )
    facts = machine_facts()
    total = time.perf_counter() - t_start
    lines = [
        "## CPU dtype: float32 vs bfloat16 (benchmarks/cpu_dtype.py)",
        "",
        f"Command: `{command_line()}` ({total:.0f} s). Embedded SmolLM2-135M-Instruct on the CPU; prefill = one "
        f"forward over 16 x 100 tokens; generation = 16 chat prompts, greedy, exactly {args.new_tokens} new tokens; "
        f"median of {args.rounds} alternating rounds.",
        "",
        *facts_lines(facts),
        f"- `dtype: auto` on this CPU: **{auto_name}** ({auto_reason})",
        "",
        "| dtype | prefill 16x100 (s) | generation (tok/s) | all prefill runs (s) | all generation runs (tok/s) |",
        "|---|---|---|---|---|",
        *[
            f"| {d} | {med_p[d]:.2f} | {med_g[d]:.1f} | {', '.join(f'{x:.2f}' for x in prefill[d])} | "
            f"{', '.join(f'{x:.1f}' for x in gen[d])} |"
            for d in models
        ],
        "",
        f"- prefill time bfloat16 / float32 = **{prefill_ratio:.2f}**; generation tok/s float32 / bfloat16 = "
        f"**{gen_ratio:.2f}** (> 1 means float32 is faster); faster here: {faster}",
        verdict(faster, auto_name),
        "",
    ]
    write_section(
        "cpu_dtype",
        lines,
        {
            "args": vars(args),
            "machine": facts,
            "auto": {"dtype": auto_name, "reason": auto_reason},
            "prefill_s": prefill,
            "generation_tok_s": gen,
            "median_prefill_s": med_p,
            "median_generation_tok_s": med_g,
            "prefill_ratio_bf16_over_f32": prefill_ratio,
            "generation_ratio_f32_over_bf16": gen_ratio,
            "faster": faster,
            "seconds": total,
        },
    )


if __name__ == "__main__":
    main()
