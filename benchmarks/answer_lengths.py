"""How long the embedded model's unsteered greedy answers are, so a study's generation budget does not cut them.

    python benchmarks/answer_lengths.py [--n 128] [--cap 384] [--dtypes float32 bfloat16]

Greedy completions of the unsteered SmolLM2-135M-Instruct on the `mini` test problems (seed 0, the problems a
study's evaluation uses), the qwen_math chat prompt, with a generous cap; per dtype: the length distribution
(tokens up to and including the stop token), how many hit the cap, and the lenient accuracy at the cap and at
smaller budgets (a completion cut at b tokens is graded on its first b tokens). Some greedy completions never
end (the model repeats itself until any cap): they are counted as "hit the cap" and excluded from the percentiles
of finished answers. The recommended budget is the smallest multiple of 16 at or above the largest 95th
percentile of finished answers over the dtypes measured, so a budget at that value cuts at most about one
finished answer in twenty; the accuracy columns show what a smaller budget costs. Writes
benchmarks/results/answer_lengths.{md,json}; `--render` rewrites the section from that JSON without measuring.
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

BUDGETS = (48, 64, 96, 128, 160, 192, 256)


def percentile(xs: list[int], q: float) -> int:
    """The q-quantile by the nearest-rank method (an observed length, no interpolation)."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="mini test problems (seed 0)")
    ap.add_argument("--cap", type=int, default=384, help="max new tokens of the measurement itself")
    ap.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render", action="store_true", help="rewrite the section from the last JSON, no measuring")
    args = ap.parse_args()
    if args.render:
        import json

        from _sections import RESULTS

        data = json.loads((RESULTS / "answer_lengths.json").read_text())
        return render(data["settings"], data["per_dtype"], data["machine"], data.get("seconds"))

    import torch
    from _sections import machine_facts

    from mechsteer.eval.grading import grade
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import generate, render_prompts
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = generate_mini("test", args.n, seed=0)
    per_dtype = {}
    for dtype in args.dtypes:
        lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype=dtype))
        prompts = render_prompts(lm, [r["problem"] for r in rows], "qwen_math")
        outs = [o[0] for o in generate(lm, None, prompts, max_new_tokens=args.cap, batch_size=args.batch_size)]
        lengths = [o.n_tokens for o in outs]
        finished = [o.n_tokens for o in outs if o.finished]
        ids = [lm.tokenizer(o.text, add_special_tokens=False)["input_ids"] for o in outs]
        acc = {}
        for b in (*BUDGETS, args.cap):
            texts = [lm.tokenizer.decode(i[:b]) for i in ids]
            acc[b] = sum(grade(t, r["answer"]).lenient_correct for t, r in zip(texts, rows)) / len(rows)
        per_dtype[dtype] = {
            "lengths": lengths,
            "finished_lengths": finished,
            "accuracy_at_budget": acc,
        }
        del lm
    render(vars(args), per_dtype, machine_facts(), time.perf_counter() - t0)


def render(settings: dict, per_dtype: dict, facts: dict, seconds: float | None) -> None:
    """Write the section (Markdown + JSON) from the measured lengths."""
    from _sections import facts_lines, write_section

    for d in per_dtype.values():
        fin = d.get("finished_lengths") or [x for x in d["lengths"] if x < settings["cap"]]
        d.update(
            finished_lengths=fin,
            truncated=len(d["lengths"]) - len(fin),
            p50=percentile(fin, 0.5),
            p90=percentile(fin, 0.9),
            p95=percentile(fin, 0.95),
            p95_all=percentile(d["lengths"], 0.95),
            max=max(fin),
        )
        d["accuracy_at_budget"] = {int(k): v for k, v in d["accuracy_at_budget"].items()}
    p95 = max(d["p95"] for d in per_dtype.values())
    recommended = 16 * math.ceil(p95 / 16)
    n, cap = settings["n"], settings["cap"]
    budgets = (*BUDGETS, cap)
    took = f" ({seconds:.0f} s)" if seconds else ""
    lines = [
        f"Command: `python benchmarks/answer_lengths.py --n {n} --cap {cap} --dtypes {' '.join(per_dtype)}`{took}. Unsteered SmolLM2-135M-Instruct, "
        f"{n} `mini` test problems (seed 0), qwen_math chat prompt, greedy, cap {cap} new tokens. "
        "Length = generated tokens including the stop token; percentiles over the answers that ended with a stop "
        "token (the others repeat until the cap); accuracy at budget b = lenient grade of the first b tokens.",
        "",
        *facts_lines(facts),
        "",
        "| dtype | never ended (hit the cap) | median | 90th pct. | 95th pct. | max | 95th pct. incl. unended | "
        + " | ".join(f"acc. @ {b}" for b in budgets)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(budgets),
    ]
    for dtype, d in per_dtype.items():
        accs = " | ".join(f"{100 * d['accuracy_at_budget'][b]:.1f}%" for b in budgets)
        lines.append(
            f"| {dtype} | {d['truncated']}/{n} | {d['p50']} | {d['p90']} | {d['p95']} | {d['max']} | {d['p95_all']} "
            f"| {accs} |"
        )
    lines += [
        "",
        "Recommended generation budget (smallest multiple of 16 >= the largest 95th percentile of finished "
        f"answers): **{recommended}**.",
    ]
    write_section(
        "answer_lengths",
        lines,
        {
            "settings": settings,
            "per_dtype": per_dtype,
            "recommended": recommended,
            "machine": facts,
            "seconds": seconds,
        },
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
