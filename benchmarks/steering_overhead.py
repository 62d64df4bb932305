"""Steered vs unsteered generation throughput on the embedded model, judged against the >= 0.98 target only
when this machine can resolve it.

Same prompts, batch and number of new tokens (min_new_tokens = max_new_tokens, so steering cannot shorten the
work), greedy. Runs ALTERNATE (plain, hooked, plain, hooked, ...; the order inside a round flips every round)
and each hooked run is divided by the plain run beside it, so drift in machine load cancels within a pair.
The figure is the median of those pair ratios, with a 95% bootstrap confidence interval of the median and
the IQR. Rounds continue until the CI of every condition is narrower than `--spread` (2%) after at least
`--min-pairs` pairs, or until the time budget is spent; then the verdict is "meets"/"misses" the target if
the CI is narrow enough, else "not resolvable on this machine" (with the spread it reached).

Conditions: `add` on all 30 layers at all positions (the paper's setup; a plain forward hook) and `add` at
generated positions (needs the position tracker).

    python benchmarks/steering_overhead.py [--budget-s 300] [--new-tokens 16] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section

setup_env()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mechsteer.generation import render_prompts, tokenize  # noqa: E402
from mechsteer.interventions import steering  # noqa: E402
from mechsteer.models.dtype import resolve_dtype  # noqa: E402
from mechsteer.models.loading import load_model  # noqa: E402
from mechsteer.spec.kinds.interventions import AddSpec  # noqa: E402
from mechsteer.spec.models import ModelSpec  # noqa: E402
from mechsteer.vectors import VectorSet  # noqa: E402

PROMPTS = [f"What is {a} + {b}?" for a, b in [(3, 4), (7, 8), (12, 5), (9, 9), (25, 17), (6, 1), (40, 2), (13, 13)]]
TARGET = 0.98


def timed_generate(lm, enc, ctx, new_tokens: int) -> float:
    if ctx is not None:
        ctx.begin()
    t0 = time.perf_counter()
    with torch.no_grad():
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


def median_ci(x: list[float], n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of the median."""
    a = np.asarray(x)
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def summarize(ratios: list[float], spread: float) -> dict:
    med = statistics.median(ratios)
    lo, hi = median_ci(ratios) if len(ratios) >= 3 else (float("nan"), float("nan"))
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else (float("nan"),) * 3
    width = hi - lo
    resolved = width <= spread
    verdict = (
        ("meets the target" if med >= TARGET else "misses the target") if resolved else "not resolvable on this machine"
    )
    return {
        "pairs": len(ratios),
        "median": med,
        "ci95": [lo, hi],
        "ci_width": width,
        "iqr": [q1, q3],
        "resolved": resolved,
        "verdict": verdict,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=300.0, help="time cap of the measurement loop")
    ap.add_argument("--min-pairs", type=int, default=8)
    ap.add_argument("--spread", type=float, default=0.02, help="max width of the 95%% CI of the median ratio")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    dtype, why = resolve_dtype(args.dtype, "cpu")
    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype=dtype, device="cpu"))
    prompts = (PROMPTS * ((args.batch + len(PROMPTS) - 1) // len(PROMPTS)))[: args.batch]
    enc = tokenize(lm, render_prompts(lm, prompts, "qwen_math"))
    g = torch.Generator().manual_seed(0)
    vs = VectorSet(torch.randn(lm.shape.n_layers, lm.shape.d_model, generator=g) * 0.05, list(range(lm.shape.n_layers)))
    conditions = {
        "add, all layers, all positions": [AddSpec(vector="v")],
        "add, all layers, generated positions": [AddSpec(vector="v", positions="generated")],
    }
    timed_generate(lm, enc, None, 4)  # warm-up
    with steering(lm.model, lm.adapter, conditions["add, all layers, generated positions"], {"v": vs}) as ctx:
        timed_generate(lm, enc, ctx, 4)
    runs = {name: {"plain": [], "hooked": [], "ratio": []} for name in conditions}
    t_loop = time.perf_counter()
    rounds = 0
    while True:
        for name, spec in conditions.items():
            hooked_first = rounds % 2 == 1
            pair = {}
            for which in ("hooked", "plain") if hooked_first else ("plain", "hooked"):
                if which == "plain":
                    pair["plain"] = timed_generate(lm, enc, None, args.new_tokens)
                else:
                    with steering(lm.model, lm.adapter, spec, {"v": vs}) as ctx:
                        pair["hooked"] = timed_generate(lm, enc, ctx, args.new_tokens)
            r = runs[name]
            r["plain"].append(pair["plain"])
            r["hooked"].append(pair["hooked"])
            r["ratio"].append(pair["hooked"] / pair["plain"])
        rounds += 1
        elapsed = time.perf_counter() - t_loop
        summ = {n: summarize(r["ratio"], args.spread) for n, r in runs.items()}
        print(
            f"round {rounds} ({elapsed:.0f} s): "
            + "; ".join(
                f"{n.split(', ')[-1]} median {s['median']:.3f} CI width {s['ci_width']:.3f}" for n, s in summ.items()
            ),
            flush=True,
        )
        per_round = elapsed / rounds
        if rounds >= args.min_pairs and all(s["resolved"] for s in summ.values()):
            break
        if elapsed + per_round > args.budget_s:
            break
    facts = machine_facts()
    total = time.perf_counter() - t_start
    lines = [
        "## Steering overhead (benchmarks/steering_overhead.py)",
        "",
        f"Command: `{command_line()}` ({total:.0f} s, measurement loop capped at {args.budget_s:.0f} s). Embedded "
        f"SmolLM2-135M-Instruct, {dtype} ({why}), CPU, batch {args.batch}, exactly {args.new_tokens} new tokens, "
        "greedy. Hooked and plain runs alternate (order flipped every round); each hooked run is divided by the "
        "plain run beside it; figure = median of these pair ratios, with its 95% bootstrap CI and the IQR. "
        f"Target: tokens/s ratio >= {TARGET}, judged only when the CI is narrower than {args.spread:.0%}.",
        "",
        *facts_lines(facts),
        "",
        "| condition | pairs | median plain tok/s | median hooked tok/s | median pair ratio | 95% CI of median | IQR | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in runs.items():
        s = summ[n]
        lines.append(
            f"| {n} | {s['pairs']} | {statistics.median(r['plain']):.1f} | {statistics.median(r['hooked']):.1f} | "
            f"{s['median']:.3f} | {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f} (width {s['ci_width']:.3f}) | "
            f"{s['iqr'][0]:.3f}-{s['iqr'][1]:.3f} | {s['verdict']} |"
        )
    spread_plain = {n: (max(r["plain"]) / min(r["plain"]) - 1) for n, r in runs.items()}
    lines += [
        "",
        "- run-to-run spread of the plain runs alone (max/min - 1): "
        + ", ".join(f"{n.split(', ')[-1]} {v:.0%}" for n, v in spread_plain.items())
        + " (the machine is shared; this is the noise the pairing has to cancel)",
        "",
    ]
    write_section(
        "steering_overhead",
        lines,
        {
            "args": vars(args),
            "dtype": dtype,
            "dtype_reason": why,
            "machine": facts,
            "runs": runs,
            "summary": summ,
            "rounds": rounds,
            "seconds": total,
        },
    )


if __name__ == "__main__":
    main()
