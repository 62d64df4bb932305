"""What dropping ended rows from a generation batch saves in a study's evaluation, measured in one run.

    python benchmarks/eval_generation.py [--n 64] [--max-new-tokens 208] [--batch-size 32] [--dtype float32]

The `mini` evaluation of studies/penultimate.yaml (greedy, the qwen_math chat prompt, the study's budget and
batch size) on the embedded SmolLM2-135M-Instruct, for two conditions: unsteered, and the bundled penultimate
vector added at block 28. Each is run twice through the lm-eval bridge: with the sequence sampler, which drops
ended rows from the batch (what mechsteer does), and with transformers' `generate`, which keeps every row of a
batch until the last one ends (what the bridge did before); the two alternate, so load changes hit both. It
reports the seconds of each, their ratio, and how many of the greedy completions are identical (both compute
the same tokens; a different batch width may change the rounding of a near tie). Writes
benchmarks/results/eval_generation.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sections import command_line, facts_lines, machine_facts, setup_env, write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=208)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup_env()
    import torch

    from mechsteer.eval.lm_eval_bridge import SteeredHFLM
    from mechsteer.eval.runner import run_eval
    from mechsteer.interventions import steering
    from mechsteer.measurement import MeasurementTask
    from mechsteer.models.loading import load_model
    from mechsteer.spec.kinds.eval_task import EvalTaskSpec
    from mechsteer.spec.kinds.interventions import AddSpec
    from mechsteer.spec.models import ModelSpec
    from mechsteer.vectors.vector_set import load_vector_set

    torch.set_num_threads(args.threads)
    facts = machine_facts()
    capability = torch.backends.cpu.get_cpu_capability()  # ATEN_CPU_CAPABILITY=avx2 emulates an AVX2 machine
    lm = load_model("smol", ModelSpec(id="smollm2-135m", dtype=args.dtype))
    bundled = Path(__file__).resolve().parent.parent / "mechsteer" / "data" / "vectors" / "smollm2-135m"
    vectors = {"pen": load_vector_set(bundled / "penultimate.safetensors")}
    conditions = {"base": [], "s_pen": [AddSpec(vector="pen", layer="penultimate")]}
    spec = EvalTaskSpec(
        task="mini",
        protocol="greedy",
        samples=1,
        limit=args.n,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        template="qwen_math",
        data_dir=None,
    )
    sampler = SteeredHFLM._sample

    def via_generate(self, context, mask, budget, do_sample, temperature, top_p, top_k):
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=int(budget.max()),
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.stop_ids,
        )
        return self._hf_generate(context, mask, budget, config, [], {})

    rows = []
    for name, ivs in conditions.items():
        seconds, outputs = {}, {}
        for engine in ("generate", "sampler", "generate", "sampler"):  # alternating: load hits both alike
            SteeredHFLM._sample = sampler if engine == "sampler" else via_generate
            with steering(lm.model, lm.adapter, ivs, vectors, tokenizer=lm.tokenizer) as ctx:
                t0 = time.perf_counter()
                result = run_eval(MeasurementTask(lm=lm, ctx=ctx, spec=spec, seed=0))
                seconds.setdefault(engine, []).append(time.perf_counter() - t0)
            outputs[engine] = {s["doc"]["id"]: s["filtered_resps"][0][0] for s in result.samples}
            lengths = [s["graded"][0]["n_tokens"] for s in result.samples]
        SteeredHFLM._sample = sampler
        same = sum(outputs["sampler"][k] == outputs["generate"][k] for k in outputs["sampler"])
        best = {k: min(v) for k, v in seconds.items()}
        rows.append(
            {
                "condition": name,
                "generate_s": best["generate"],
                "sampler_s": best["sampler"],
                "ratio": best["generate"] / best["sampler"],
                "identical": same,
                "n": len(outputs["sampler"]),
                "mean_len": sum(lengths) / len(lengths),
                "ended_at_cap": sum(n >= args.max_new_tokens for n in lengths),
                "all_seconds": seconds,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        f"Command: `{command_line()}`. Embedded SmolLM2-135M-Instruct ({args.dtype}), the `mini` evaluation of "
        f"studies/penultimate.yaml: {args.n} test problems, greedy, {args.max_new_tokens} new tokens at most, "
        f"batches of {args.batch_size}, through the lm-eval bridge; `generate` keeps every row of a batch until "
        "its last row ends, the sampler drops ended rows. Best of two alternating runs each.",
        "",
        *facts_lines(facts),
        f"- kernels used (torch.backends.cpu.get_cpu_capability): {capability}",
        "",
        "| condition | transformers generate (s) | sampler, ended rows dropped (s) | generate / sampler | identical "
        "completions | mean length | at the cap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['generate_s']:.1f} | {r['sampler_s']:.1f} | **{r['ratio']:.2f}** | "
            f"{r['identical']}/{r['n']} | {r['mean_len']:.1f} | {r['ended_at_cap']} |"
        )
    write_section(
        "eval_generation", lines, {"settings": vars(args), "rows": rows, "machine": facts, "capability": capability}
    )


if __name__ == "__main__":
    main()
