"""Held-out accuracy of the bundled SmolLM2-135M vector sets and their norm-matched random controls.

Every condition goes through the public path a study uses: vector sets are built by the study vector
builders (`bundled`, `random` with `norm_like`), applied with the `add` intervention (`steering()`), and
scored on the bundled task's held-out test split with both graders (lenient = boxed-or-last-number, and
boxed). Conditions: the base model, each bundled set, and for each set random directions with the same
per-layer norms (seeds 0..R-1). Greedy and T=1 sampling share one seed.

Usage: HF_HUB_OFFLINE=1 python benchmarks/bundled_vectors_eval.py [--n 64] [--samples 4] [--random-seeds 3]
       [--threads 1] [--out benchmarks/results/bundled_vectors_eval.md]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
SETS = ("all_layers", "last", "penultimate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="held-out problems (mini test split, seed 0)")
    ap.add_argument("--samples", type=int, default=4, help="T=1 samples per problem (0 = greedy only)")
    ap.add_argument("--random-seeds", type=int, default=3, help="random-direction controls per vector set")
    ap.add_argument(
        "--random-samples",
        type=int,
        default=0,
        help="T=1 samples for the random controls (default 0: greedy only, to save time)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    ap.add_argument("--no-base", action="store_true", help="skip the unsteered model (measured in another run)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bundled_vectors_eval.md")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mechsteer.engine.vectors import BuildContext
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.interventions import steering
    from mechsteer.models.loading import load_model
    from mechsteer.spec.kinds.interventions import AddSpec
    from mechsteer.spec.kinds.vectors import BundledVectors, RandomVectors
    from mechsteer.spec.models import ModelSpec
    from mechsteer.train.data import encode_prompts
    from mechsteer.train.evaluate import evaluate

    t_start = time.perf_counter()
    lm = load_model("policy", ModelSpec(id="smollm2-135m", dtype="bfloat16"))
    rows = generate_mini("test", args.n, seed=0)
    ids = encode_prompts(lm, [r["problem"] for r in rows], "qwen_math", None)
    specs = {}
    for s in args.sets:
        specs[s] = BundledVectors(name=f"smollm2-135m/{s}")
        for seed in range(args.random_seeds):
            specs[f"random_{s}_{seed}"] = RandomVectors(seed=seed, norm_like=s)
    ctx = BuildContext(
        n_layers=lm.shape.n_layers,
        d_model=lm.shape.d_model,
        specs=specs,
        resolve_path=Path,
        model_id="smollm2-135m",
        lm=lm,
    )
    conditions = ([] if args.no_base else [("base", None)]) + [(name, ctx.get(name)) for name in specs]
    results = []
    for name, vs in conditions:
        samples = args.samples if (vs is None or not name.startswith("random_")) else args.random_samples
        t0 = time.perf_counter()
        if vs is None:
            ev = evaluate(lm, rows, ids, samples=samples, max_new_tokens=args.max_new_tokens, seed=0)
        else:
            with steering(lm.model, lm.adapter, [AddSpec(vector="v")], {"v": vs}):
                ev = evaluate(lm, rows, ids, samples=samples, max_new_tokens=args.max_new_tokens, seed=0)
        norm = float(vs.vectors.norm()) if vs is not None else 0.0
        rec = {"condition": name, "norm": norm, **ev}
        results.append(rec)
        g = ev["greedy"]
        sm = ev.get("sampled")
        print(
            f"{name}: greedy {g['lenient']:.3f} / boxed {g['boxed']:.3f}"
            + (f"; T=1 {sm['lenient']:.3f} / boxed {sm['boxed']:.3f}" if sm else "")
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    args.out.write_text(table(results, args, time.perf_counter() - t_start))
    print(args.out.read_text())


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(results: list[dict], args, seconds: float) -> str:
    import torch

    lines = [
        "# Bundled SmolLM2-135M vectors: held-out accuracy with norm-matched random controls",
        "",
        f"`python benchmarks/bundled_vectors_eval.py --n {args.n} --samples {args.samples} --random-seeds "
        f"{args.random_seeds} --threads {args.threads} --sets {' '.join(args.sets)}"
        f"{' --no-base' if args.no_base else ''}` ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
        f"bf16, {seconds / 60:.0f} min). Held-out: `generate_mini('test', {args.n}, seed=0)` (never trained on), "
        f"qwen_math chat prompt, {args.max_new_tokens} new tokens, vectors applied with the `add` intervention at "
        f"every position. Lenient = last \\boxed{{}} or last number correct; boxed = the paper's grader. "
        f"T=1: {args.samples} samples per problem (n = {args.n * args.samples}).",
        "",
        "| condition | total norm | greedy lenient | greedy boxed | greedy mean length | T=1 lenient | T=1 boxed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        g, s = r["greedy"], r.get("sampled")
        lines.append(
            f"| {r['condition']} | {r['norm']:.2f} | {_pct(g['lenient'])} | {_pct(g['boxed'])} | "
            f"{g['mean_len']:.1f} | {_pct(s['lenient'] if s else None)} | {_pct(s['boxed'] if s else None)} |"
        )
    se = 100 * (0.25 / args.n) ** 0.5
    lines += ["", f"Binomial standard error at n = {args.n}: about {se:.0f} points at 50%.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
