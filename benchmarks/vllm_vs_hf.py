"""vLLM on bias-compiled checkpoints vs HF transformers with hooks, on one GPU: same greedy completions, and the
throughput ratio. Runs unchanged on any NVIDIA GPU with vLLM installed; elsewhere it exits with one line.

For the embedded SmolLM2-135M-Instruct and a small Qwen2 (`--hub-model`, default Qwen/Qwen2.5-0.5B-Instruct;
a local directory works too, which is what a machine without network needs):

1. a random all-layer steering vector, per-layer norm = `--rel-norm` x the median residual-stream norm of
   that layer on the prompts (so it changes completions without wrecking them), compiled into a checkpoint
   (mechsteer.backends.bias_checkpoint; Qwen2 is carried as Llama with attention biases);
2. greedy agreement on `--n` `mini` problems (the paper's chat prompt, `--new-tokens` tokens): HF
   `generate` with the hooked `add` vs vLLM on the compiled checkpoint, in float32 (exactness of the
   compilation) and bfloat16; the unsteered base model through both engines in bfloat16 gives the engines'
   own disagreement rate (different kernels), the floor a steered comparison can reach;
3. throughput in bfloat16: `--tp-prompts` prompts, exactly `--tp-tokens` new tokens each (EOS ignored on
   both sides), HF batch `--hf-batch` vs vLLM's scheduler; ratio of generated tokens/s;
4. the `eval` measurement through mechsteer's vLLM path (eval/vllm_backend.run_eval_vllm) vs the HF path
   (eval/runner.run_eval) on the same problems: accuracies and identical completions (skip: --skip-eval).

Writes benchmarks/results/vllm_vs_hf.{md,json}. `--hf-only` runs the HF half on the CPU with tiny settings
(checks the script where there is no GPU; writes nothing).

    python benchmarks/vllm_vs_hf.py [--hub-model Qwen/Qwen2.5-0.5B-Instruct] [--n 32] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback

from _sections import command_line, machine_facts, setup_env, write_section

setup_env(offline=False)

from mechsteer import machine  # noqa: E402


def gpu_facts() -> dict:
    from importlib.metadata import version

    import torch

    return {
        "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "vllm": version("vllm"),
        "transformers": version("transformers"),
    }


def relative_vector(lm, prompts_ids, rel_norm: float, seed: int):
    """Random directions, row l scaled to rel_norm x the median token norm of block l's output."""
    import torch

    from mechsteer.vectors import VectorSet

    norms = [[] for _ in range(lm.shape.n_layers)]
    with torch.no_grad():
        for ids in prompts_ids[:8]:
            hs = lm.model(torch.tensor([ids], device=lm.device), output_hidden_states=True).hidden_states
            for layer in range(lm.shape.n_layers):
                norms[layer] += hs[layer + 1][0].float().norm(dim=-1).tolist()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(lm.shape.n_layers, lm.shape.d_model, generator=g)
    scale = torch.tensor([rel_norm * statistics.median(n) for n in norms])
    return VectorSet(v / v.norm(dim=1, keepdim=True) * scale[:, None], list(range(lm.shape.n_layers)))


def hf_greedy(lm, interventions, vectors, prompts, new_tokens, batch):
    from mechsteer.generation import model_sampling, sample_texts
    from mechsteer.interventions import steering

    settings = model_sampling(lm, max_new_tokens=new_tokens, batch_size=batch)
    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        return [q.text(lm.tokenizer) for q in sample_texts(lm, ctx, prompts, settings)]


def hf_throughput(lm, interventions, vectors, prompts, new_tokens, batch) -> float:
    import torch

    from mechsteer.generation import tokenize
    from mechsteer.interventions import steering

    n_tok = 0
    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        torch.cuda.synchronize() if lm.device.type == "cuda" else None
        t0 = time.perf_counter()
        for start in range(0, len(prompts), batch):
            enc = tokenize(lm, prompts[start : start + batch])
            ctx.begin()
            with torch.no_grad():
                out = lm.model.generate(
                    **enc,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=lm.tokenizer.pad_token_id,
                )
            n_tok += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
        torch.cuda.synchronize() if lm.device.type == "cuda" else None
    return n_tok / (time.perf_counter() - t0)


class Engine:
    """One vLLM engine on a checkpoint; closed explicitly so the next one gets the memory."""

    def __init__(self, path: str, dtype: str, eager: bool, max_len: int, mem: float):
        from vllm import LLM

        t0 = time.perf_counter()
        self.llm = LLM(
            model=path, dtype=dtype, seed=0, gpu_memory_utilization=mem, max_model_len=max_len, enforce_eager=eager
        )
        self.start_s = time.perf_counter() - t0

    def greedy(self, prompt_ids, new_tokens, stops, exact: bool = False):
        from vllm import SamplingParams

        sp = SamplingParams(
            temperature=0.0,
            max_tokens=new_tokens,
            stop_token_ids=stops,
            skip_special_tokens=True,
            **({"min_tokens": new_tokens, "ignore_eos": True} if exact else {}),
        )
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sp, use_tqdm=False)
        return [o.outputs[0].text for o in outs], sum(len(o.outputs[0].token_ids) for o in outs)

    def close(self):
        import torch

        del self.llm
        gc.collect()
        torch.cuda.empty_cache()


def common_prefix_fraction(a: str, b: str) -> float:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / max(len(a), len(b), 1)


def agreement(hf: list[str], vl: list[str]) -> dict:
    same = sum(x == y for x, y in zip(hf, vl))
    return {
        "identical": same,
        "n": len(hf),
        "mean_common_prefix": statistics.mean(common_prefix_fraction(x, y) for x, y in zip(hf, vl)),
    }


def eval_both(lm, interventions, vectors, n, new_tokens):
    """The `eval` measurement through runner.run_eval (HF) and vllm_backend.run_eval_vllm (vLLM)."""
    from pathlib import Path

    from mechsteer.eval.runner import run_eval
    from mechsteer.eval.vllm_backend import release_engine, run_eval_vllm
    from mechsteer.interventions import steering
    from mechsteer.measurement import MeasurementTask

    class _Study:
        @staticmethod
        def resolve_path(p):
            return Path(p)

    opts = {
        "task": "mini",
        "protocol": "greedy",
        "samples": 1,
        "limit": n,
        "max_new_tokens": new_tokens,
        "batch_size": 32,
    }
    out = {}
    with steering(lm.model, lm.adapter, interventions, vectors, tokenizer=lm.tokenizer) as ctx:
        t0 = time.perf_counter()
        out["hf"] = (
            run_eval(MeasurementTask(lm=lm, ctx=ctx, options=opts, seed=0, study=_Study())),
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        out["vllm"] = (
            run_eval_vllm(MeasurementTask(lm=lm, ctx=ctx, options=opts, seed=0, study=_Study()), interventions),
            time.perf_counter() - t0,
        )
    release_engine()
    resp = {k: {str(s["doc"]["id"]): s["filtered_resps"][0][0] for s in r.samples} for k, (r, _) in out.items()}
    same = sum(resp["hf"][i] == resp["vllm"].get(i) for i in resp["hf"])
    return {k: {"metrics": r.metrics, "seconds": t} for k, (r, t) in out.items()} | {
        "identical": same,
        "n": len(resp["hf"]),
    }


def run_model(model_id: str, args, hf_only: bool) -> dict:
    import torch

    from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint, condition_bias
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.generation import render_prompts, stop_token_ids, uses_chat_template
    from mechsteer.models.loading import load_model
    from mechsteer.spec.kinds.interventions import AddSpec
    from mechsteer.spec.models import ModelSpec

    device = "cpu" if hf_only else "cuda"
    res: dict = {"model": model_id}
    lms = {}
    for dtype in ["float32"] if hf_only else ["float32", "bfloat16"]:
        lms[dtype] = load_model("m", ModelSpec(id=model_id, dtype=dtype, device=device))
    lm32 = lms["float32"]
    problems = [r["problem"] for r in generate_mini("test", max(args.n, 8))][: args.n]
    prompts = render_prompts(lm32, problems, "qwen_math")
    add_special = not uses_chat_template(lm32)
    prompt_ids = [lm32.tokenizer(p, add_special_tokens=add_special)["input_ids"] for p in prompts]
    vs = relative_vector(lm32, prompt_ids, args.rel_norm, args.seed)
    vectors, cond = {"v": vs}, [AddSpec(vector="v")]
    res["vector_norms"] = [round(float(vs.vectors[i].norm()), 3) for i in vs.layers]
    t0 = time.perf_counter()
    ckpt = str(compile_bias_checkpoint(lm32, condition_bias(cond, vectors, lm32.shape.n_layers, lm32.shape.d_model)))
    res["compile_s"] = time.perf_counter() - t0
    res["checkpoint"] = ckpt
    stops = stop_token_ids(lm32.model, lm32.tokenizer)
    hf = {
        "f32_steered": hf_greedy(lm32, cond, vectors, prompts, args.new_tokens, args.n),
        "f32_base": hf_greedy(lm32, [], {}, prompts, args.new_tokens, args.n),
    }
    res["changed_by_vector_f32"] = sum(a != b for a, b in zip(hf["f32_steered"], hf["f32_base"]))
    if hf_only:
        res["hf_only"] = {k: v[:2] for k, v in hf.items()}
        return res
    lm16 = lms["bfloat16"]
    hf["bf16_steered"] = hf_greedy(lm16, cond, vectors, prompts, args.new_tokens, args.n)
    hf["bf16_base"] = hf_greedy(lm16, [], {}, prompts, args.new_tokens, args.n)
    base_dir = str(compile_bias_checkpoint(lm32, torch.zeros(lm32.shape.n_layers, lm32.shape.d_model)))
    max_len = max(len(i) for i in prompt_ids) + max(args.new_tokens, args.tp_tokens) + 8
    for key, path, dtype, eager in (
        ("f32_steered", ckpt, "float32", True),
        ("bf16_steered", ckpt, "bfloat16", False),
        ("bf16_base", base_dir, "bfloat16", True),
    ):
        eng = Engine(path, dtype, eager, max_len, args.gpu_mem)
        texts, _ = eng.greedy(prompt_ids, args.new_tokens, stops)
        res[f"agree_{key}"] = agreement(hf[key], texts) | {"engine_start_s": eng.start_s}
        if key == "bf16_steered":
            tp_ids = (prompt_ids * (args.tp_prompts // len(prompt_ids) + 1))[: args.tp_prompts]
            tp_prompts = (prompts * (args.tp_prompts // len(prompts) + 1))[: args.tp_prompts]
            eng.greedy(tp_ids[:8], 8, stops, exact=True)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, n_tok = eng.greedy(tp_ids, args.tp_tokens, stops, exact=True)
            vllm_tps = n_tok / (time.perf_counter() - t0)
            hf_throughput(lm16, cond, vectors, tp_prompts[:8], 8, 8)  # warm-up
            hf_tps = hf_throughput(lm16, cond, vectors, tp_prompts, args.tp_tokens, args.hf_batch)
            res["throughput"] = {
                "vllm_tok_s": vllm_tps,
                "hf_tok_s": hf_tps,
                "ratio": vllm_tps / hf_tps,
                "vllm_tokens": n_tok,
                "prompts": args.tp_prompts,
                "new_tokens": args.tp_tokens,
            }
        eng.close()
    if not args.skip_eval:
        try:
            res["eval"] = eval_both(lm16, cond, vectors, args.n, args.new_tokens)
        except Exception as e:  # noqa: BLE001 - recorded in the section, the other figures still count
            res["eval_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
    del lms
    gc.collect()
    torch.cuda.empty_cache()
    return res


def section(results: list[dict], args, facts: dict, total: float) -> list[str]:
    lines = [
        "## vLLM (bias-compiled checkpoints) vs HF with hooks (benchmarks/vllm_vs_hf.py)",
        "",
        f"Command: `{command_line()}` ({total:.0f} s). {facts.get('gpu')} ({facts.get('gpu_memory_gib')} GiB), CUDA "
        f"{facts.get('cuda')}, vLLM {facts.get('vllm')}, transformers {facts.get('transformers')}, torch {facts.get('torch')}. "
        f"Random all-layer vector, row norm {args.rel_norm} x the layer's median residual norm (seed {args.seed}); "
        f"{args.n} `mini` problems, the paper's chat prompt, greedy, {args.new_tokens} new tokens; HF = "
        "`generate` with the hooked `add`; vLLM = stock `LLM` on the compiled checkpoint, same prompt token ids.",
        "",
        "| model | vector changes (HF f32) | identical f32 steered | identical bf16 steered | identical bf16 base (engine floor) | "
        "vLLM tok/s | HF tok/s | throughput ratio vLLM/HF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | not run: {r['error']} | | | | | | |")
            continue

        def a(k, r=r):
            x = r[k]
            return f"{x['identical']}/{x['n']} (prefix {x['mean_common_prefix']:.2f})"

        tp = r["throughput"]
        lines.append(
            f"| {r['model']} | {r['changed_by_vector_f32']}/{args.n} | {a('agree_f32_steered')} | "
            f"{a('agree_bf16_steered')} | {a('agree_bf16_base')} | {tp['vllm_tok_s']:.0f} | {tp['hf_tok_s']:.0f} | "
            f"**{tp['ratio']:.1f}** |"
        )
    lines += [
        "",
        f"Throughput: bfloat16, {args.tp_prompts} prompts x exactly {args.tp_tokens} new tokens (EOS ignored), "
        f"HF batch {args.hf_batch}, vLLM's own scheduler (CUDA graphs on). 'prefix' = mean shared fraction of "
        "the completion text.",
        "",
    ]
    for r in results:
        if "eval" in r:
            e = r["eval"]
            acc = {k: e[k]["metrics"].get("acc_lenient", float("nan")) for k in ("hf", "vllm")}
            lines.append(
                f"- `eval` measurement, {r['model']}: lenient accuracy HF {acc['hf']:.3f} vs vLLM {acc['vllm']:.3f}; "
                f"identical completions {e['identical']}/{e['n']}; wall {e['hf']['seconds']:.0f} s vs "
                f"{e['vllm']['seconds']:.0f} s (vLLM includes engine start)"
            )
        elif "eval_error" in r:
            lines.append(f"- `eval` measurement, {r['model']}: vLLM path FAILED: {r['eval_error']}")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hub-model", default="Qwen/Qwen2.5-0.5B-Instruct", help="a small Qwen2 hub id or local directory")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rel-norm", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp-prompts", type=int, default=256)
    ap.add_argument("--tp-tokens", type=int, default=128)
    ap.add_argument("--hf-batch", type=int, default=64)
    ap.add_argument("--gpu-mem", type=float, default=0.3, help="vLLM gpu_memory_utilization per engine")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--hf-only", action="store_true", help="CPU check of the HF half; writes nothing")
    args = ap.parse_args()
    if not args.hf_only:
        problem = machine.vllm_problem()
        if problem is None:
            import torch

            if not torch.cuda.is_available():
                problem = "backend vllm cannot run here: torch sees no CUDA device"
        if problem is not None:
            print(f"vllm_vs_hf: not run: {problem}")
            sys.exit(2)
    import torch

    if args.hf_only:
        torch.set_num_threads(1)
        args.n, args.new_tokens = min(args.n, 4), min(args.new_tokens, 8)
    t_start = time.perf_counter()
    results = []
    for model_id in ("smollm2-135m", args.hub_model):
        try:
            results.append(run_model(model_id, args, args.hf_only))
        except Exception as e:  # noqa: BLE001 - e.g. the hub model is not reachable: keep the other model's figures
            traceback.print_exc()
            results.append(
                {"model": model_id, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            )
        print(results[-1] if args.hf_only else {k: v for k, v in results[-1].items() if k != "eval"}, flush=True)
    if args.hf_only:
        return
    facts = machine_facts() | gpu_facts()
    total = time.perf_counter() - t_start
    write_section(
        "vllm_vs_hf",
        section(results, args, facts, total),
        {"args": vars(args), "machine": facts, "results": results, "seconds": total},
    )


if __name__ == "__main__":
    main()
