"""What re-running reproduces: greedy accuracy of the embedded SmolLM2-135M (Quickstart-like: the `mini` test
problems, the qwen_math chat prompt, 64 new tokens) across dtypes and batch sizes, in one run.

    python benchmarks/reproducibility.py [--n 16] [--conditions base steered] [--batch-sizes 1 8 16]

For each dtype (float32, bfloat16) and condition (unsteered; steered with the bundled all-layer vectors) the
same problems are generated greedily at each batch size through mechsteer's generation path (length-sorted,
left-padded batches), and the last (fastest) batch size is run twice. Reported: lenient accuracy per setting, how many
completions differ from the float32 / first-batch-size completions, whether the repeat was identical, and
the spread (max - min accuracy) per condition next to one binomial standard error. Writes
benchmarks/results/reproducibility.{md,json}. Default run (16 problems, unsteered only): about 5 minutes on
2 CPU cores; `--conditions base steered --n 32` gives a fuller picture in about 20.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="mini test problems (seed 0)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    ap.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 8, 16])
    ap.add_argument("--conditions", nargs="*", default=["base"], choices=["base", "steered"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from _sections import command_line, facts_lines, machine_facts, write_section

    from mechsteer.eval.grading import grade
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import model_sampling, render_prompts, sample_texts
    from mechsteer.interventions import steering
    from mechsteer.models.loading import load_model
    from mechsteer.spec.kinds.interventions import AddSpec
    from mechsteer.spec.kinds.vectors import BundledVectors
    from mechsteer.spec.models import ModelSpec
    from mechsteer.vectors.sources import BuildContext

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    rows = generate_mini("test", args.n, seed=0)
    runs = []  # {dtype, condition, batch_size, repeat, acc, texts}
    for dtype in args.dtypes:
        lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype=dtype))
        prompts = render_prompts(lm, [r["problem"] for r in rows], "qwen_math")
        ctx_b = BuildContext(
            n_layers=lm.shape.n_layers,
            d_model=lm.shape.d_model,
            specs={"v": BundledVectors(name="smollm2-135m/all_layers")},
            resolve_path=Path,
            model_id="smollm2-135m",
            lm=lm,
        )
        for cond in args.conditions:
            for k, bs in enumerate(args.batch_sizes):
                for rep in range(2 if k == len(args.batch_sizes) - 1 else 1):
                    t0 = time.perf_counter()
                    settings = model_sampling(lm, max_new_tokens=args.max_new_tokens, batch_size=bs)
                    if cond == "steered":
                        with steering(lm.model, lm.adapter, [AddSpec(vector="v")], {"v": ctx_b.get("v")}) as ctx:
                            outs = sample_texts(lm, ctx, prompts, settings)
                    else:
                        outs = sample_texts(lm, None, prompts, settings)
                    texts = [q.text(lm.tokenizer) for q in outs]
                    acc = sum(grade(t, r["answer"]).lenient_correct for t, r in zip(texts, rows)) / len(rows)
                    runs.append(
                        {
                            "dtype": dtype,
                            "condition": cond,
                            "batch_size": bs,
                            "repeat": rep,
                            "acc": acc,
                            "texts": texts,
                            "seconds": time.perf_counter() - t0,
                        }
                    )
                    print(
                        f"{dtype} {cond} batch {bs} run {rep + 1}: lenient {acc:.3f} "
                        f"({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
        del lm

    def ref(cond):
        return next(r for r in runs if r["condition"] == cond and r["repeat"] == 0)

    n = len(rows)
    lines = [
        "# Reproducibility: greedy accuracy across dtypes and batch sizes (benchmarks/reproducibility.py)",
        "",
        f"Command: `{command_line()}`. Machine: {'; '.join(line.removeprefix('- ') for line in facts_lines(machine_facts()))}. Whole run {time.perf_counter() - t_start:.0f} s.",
        "",
        (
            f"Embedded SmolLM2-135M-Instruct, {n} `mini` test problems (seed 0), qwen_math chat prompt, greedy, "
            f"{args.max_new_tokens} new tokens, lenient grader; `steered` = bundled all-layer vectors (`add`). "
            f"'differ' counts completions that are not identical to another setting's: the same condition's "
            f"first setting ({args.dtypes[0]}, batch {args.batch_sizes[0]}), and the same dtype's first batch "
            f"size ({args.batch_sizes[0]})."
        ),
        "",
        (
            f"| condition | dtype | batch size | run | lenient acc. | differ from {args.dtypes[0]}, batch "
            f"{args.batch_sizes[0]} | differ from the same dtype, batch {args.batch_sizes[0]} |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        diff = sum(a != b for a, b in zip(r["texts"], ref(r["condition"])["texts"]))
        same_dtype = next(x for x in runs if (x["condition"], x["dtype"]) == (r["condition"], r["dtype"]))
        diff_bs = sum(a != b for a, b in zip(r["texts"], same_dtype["texts"]))
        r["differ_from_first"], r["differ_from_same_dtype_first"] = diff, diff_bs
        lines.append(
            f"| {r['condition']} | {r['dtype']} | {r['batch_size']} | {r['repeat'] + 1} | "
            f"{100 * r['acc']:.1f}% | {diff}/{n} | {diff_bs}/{n} |"
        )
    lines += [
        "",
        (
            "| condition | repeat identical (same dtype, same batch size) | accuracy spread (max - min) | "
            "one standard error at that accuracy |"
        ),
        "|---|---|---|---|",
    ]
    summary = {}
    for cond in args.conditions:
        rs = [r for r in runs if r["condition"] == cond]
        same = all(
            a["texts"] == b["texts"]
            for a in rs
            for b in rs
            if a is not b and (a["dtype"], a["batch_size"]) == (b["dtype"], b["batch_size"])
        )
        accs = [r["acc"] for r in rs]
        p = sum(accs) / len(accs)
        se = math.sqrt(p * (1 - p) / n)
        summary[cond] = {"repeat_identical": same, "spread": max(accs) - min(accs), "se": se}
        lines.append(
            f"| {cond} | {'yes' if same else 'no'} | {100 * (max(accs) - min(accs)):.1f} points | "
            f"{100 * se:.1f} points |"
        )
    for r in runs:
        r.pop("texts")
    write_section("reproducibility", "\n".join(lines), {"settings": vars(args), "runs": runs, "summary": summary})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
