"""Compiled-checkpoint equivalence on the embedded SmolLM2-135M-Instruct: the bias-compiled checkpoint loaded by
plain transformers (no hooks) against the hooked `add`, in one run.

Condition: the bundled all-layer RLOO vectors (scale 1.5) plus a random vector added at layers 5 and 20
(scale -2), so two interventions sum into one bias. Reports max |logit diff| compiled vs hooked in float64,
float32 and bfloat16, how far each float32 path is from the float64 logits (float32's own rounding), the
greedy completions of both in float32, and the compile time (cold and cached).

    python benchmarks/bias_checkpoint.py [--threads 1] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.resources import files

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section

setup_env()

import os  # noqa: E402

import torch  # noqa: E402

from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint, condition_bias  # noqa: E402
from mechsteer.interventions import steering  # noqa: E402
from mechsteer.models.adapters import adapter_for  # noqa: E402
from mechsteer.models.embedded import embedded_dir  # noqa: E402
from mechsteer.spec.kinds.interventions import AddSpec  # noqa: E402
from mechsteer.vectors import VectorSet, load_vector_set  # noqa: E402

PROMPTS = [
    "What is 12 + 30?",
    "Tell me a story about a cat and a very long river.",
    "Name three prime numbers.",
    "What is 7 times 8?",
]


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    src = embedded_dir()
    trained = load_vector_set(files("mechsteer") / "data/vectors/smollm2-135m/all_layers.safetensors")
    g = torch.Generator().manual_seed(0)
    vecs = {"trained": trained, "rand": VectorSet(torch.randn(30, 576, generator=g) * 0.5, list(range(30)))}
    cond = [AddSpec(vector="trained", scale=1.5), AddSpec(vector="rand", layer=[5, 20], scale=-2.0)]
    bias = condition_bias(cond, vecs, 30, 576)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MECHSTEER_CACHE"] = cache  # a cold compile, not a cached one
        t0 = time.perf_counter()
        out = compile_bias_checkpoint(src, bias)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert compile_bias_checkpoint(src, bias) == out
        t_cached = time.perf_counter() - t0
        tok = AutoTokenizer.from_pretrained(src)
        tok.padding_side = "left"
        chat = [
            tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in PROMPTS
        ]
        enc = tok(chat, return_tensors="pt", padding=True, add_special_tokens=False)
        singles = [tok(c, return_tensors="pt", add_special_tokens=False)["input_ids"] for c in chat]
        logits, texts, changed = {}, {}, {}
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            load = dict(dtype=dtype, attn_implementation="eager")
            model = AutoModelForCausalLM.from_pretrained(src, **load).eval()
            compiled = AutoModelForCausalLM.from_pretrained(out, **load).eval()
            with torch.no_grad():
                # logits one prompt at a time (no padding: float64 eager attention turns fully masked
                # padding rows into NaN); greedy generation batched with left padding
                base = torch.cat([model(ids).logits[0] for ids in singles])
                with steering(model, adapter_for(model), cond, vecs):
                    hooked = torch.cat([model(ids).logits[0] for ids in singles])
                    if dtype == torch.float32:
                        gen_h = model.generate(
                            **enc, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                        )
                got = torch.cat([compiled(ids).logits[0] for ids in singles])
                if dtype == torch.float32:
                    gen_c = compiled.generate(
                        **enc, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                    )
                    n = enc["input_ids"].shape[1]
                    texts = {
                        "hooked": tok.batch_decode(gen_h[:, n:], skip_special_tokens=True),
                        "compiled": tok.batch_decode(gen_c[:, n:], skip_special_tokens=True),
                    }
            name = str(dtype).removeprefix("torch.")
            logits[name] = (hooked.double(), got.double())
            changed[name] = (hooked - base).double().abs().max().item()
            del model, compiled
    h64 = logits["float64"][0]
    diffs = {d: (c - h).abs().max().item() for d, (h, c) in logits.items()}
    err = {
        d: {"hooked": (logits[d][0] - h64).abs().max().item(), "compiled": (logits[d][1] - h64).abs().max().item()}
        for d in ("float32", "bfloat16")
    }
    same = sum(a == b for a, b in zip(texts["hooked"], texts["compiled"]))
    facts = machine_facts()
    total = time.perf_counter() - t_start
    lines = [
        "## Bias-compiled checkpoint equivalence (benchmarks/bias_checkpoint.py)",
        "",
        f"Command: `{command_line()}` ({total:.0f} s). Embedded SmolLM2-135M-Instruct; condition = bundled all-layer "
        "RLOO vectors x 1.5 plus a random vector (per-row norm ~12) x -2 at layers 5 and 20 (two `add`s summed "
        f"into one bias); {len(PROMPTS)} chat prompts, logits at every position; the compiled "
        "checkpoint (Llama, `mlp_bias: true`) loaded by `AutoModelForCausalLM.from_pretrained`, no hooks; eager "
        "attention on both sides.",
        "",
        *facts_lines(facts),
        "",
        "| dtype | max abs logit change by the condition | max abs diff compiled vs hooked | hooked vs float64 "
        "hooked | compiled vs float64 hooked |",
        "|---|---|---|---|---|",
        *[
            f"| {d} | {changed[d]:.3g} | {diffs[d]:.3g} | {err[d]['hooked']:.3g} | {err[d]['compiled']:.3g} |"
            if d in err
            else f"| {d} | {changed[d]:.3g} | {diffs[d]:.3g} | - | - |"
            for d in logits
        ],
        "",
        "- The compiled and hooked models differ only in where s_l is added (inside down_proj vs after the "
        f"block), i.e. the order of float additions: in float64 the difference is {diffs['float64']:.3g}; in "
        "float32 and bfloat16 it is of the size of each dtype's own rounding error (the last two columns: each "
        "path against the float64 logits).",
        f"- the 1e-5 target of issue 10 in float32: {'met' if diffs['float32'] <= 1e-5 else 'NOT met'} on this "
        "30-layer model (it is met on the tiny test models, tests/unit/test_bias_checkpoint.py); the float32 "
        "difference is of the size of float32's own error here, which the slow test "
        "(tests/slow/test_bias_checkpoint_embedded.py) checks instead",
        f"- greedy completions ({args.new_tokens} new tokens, float32): identical for {same} of {len(PROMPTS)} prompts",
        f"- compile time: {t_cold:.2f} s cold (fingerprint of the 0.5 GB base + hard links + bias shard), "
        f"{t_cached:.3f} s cached",
        "",
    ]
    write_section(
        "bias_checkpoint",
        lines,
        {
            "args": vars(args),
            "machine": facts,
            "max_abs_diff": diffs,
            "max_abs_change": changed,
            "error_vs_float64": err,
            "greedy_identical": same,
            "n_prompts": len(PROMPTS),
            "texts": texts,
            "compile_seconds": {"cold": t_cold, "cached": t_cached},
            "seconds": total,
        },
    )


if __name__ == "__main__":
    main()
