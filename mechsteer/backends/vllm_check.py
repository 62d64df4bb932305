"""`python -m mechsteer.backends.vllm_check`: does vLLM work here? The last step of scripts/setup_vllm.sh.

Imports vLLM, compiles the embedded model (SmolLM2-135M-Instruct) into a zero-bias checkpoint, starts an
engine on it in float32 with the bias-sync worker extension, puts a random bias on every block in place,
and checks that the engine's greedy tokens equal transformers' with the same bias added after each block
(the hooked `add`). Prints one line and exits 0, or names what failed and exits 1. About a minute on two
CPU cores, most of it the engine's start-up.
"""

from __future__ import annotations

import sys
import time

PROBLEMS = ["What is 12 + 30?", "Name a prime number larger than 10."]
NEW_TOKENS = 12


def main() -> int:
    """Run the check described above; 0 when vLLM's greedy tokens match transformers' with the same biases, 1 (with
    the reason on stderr) otherwise."""
    import torch

    from mechsteer.backends.bias_checkpoint import compile_bias_checkpoint
    from mechsteer.backends.vllm_engine import (
        import_vllm,
        set_down_proj_bias,
        shutdown_engine,
        start_engine,
        vllm_version,
    )
    from mechsteer.errors import MechsteerError
    from mechsteer.hooks import HookScope
    from mechsteer.models.adapters import decoder_output_tensor, replace_decoder_output
    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    try:
        vllm = import_vllm()
        lm = load_model("check", ModelSpec(id="smollm2-135m", dtype="float32", device="cpu"))
        n, d = lm.shape.n_layers, lm.shape.d_model
        checkpoint = compile_bias_checkpoint(lm, torch.zeros(n, d, dtype=torch.float64))
    except MechsteerError as e:
        print(f"vllm_check: {e}", file=sys.stderr)
        return 1
    bias = torch.randn(n, d, generator=torch.Generator().manual_seed(0)) * 0.5
    encoded = [
        lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True) for p in PROBLEMS
    ]
    prompts = [list(e["input_ids"] if hasattr(e, "keys") else e) for e in encoded]
    expected = []
    with HookScope("vllm_check") as scope, torch.no_grad():
        for i in range(n):
            scope.forward_hook(
                lm.adapter.layer(lm.model, i),
                lambda m, a, out, v=bias[i]: replace_decoder_output(out, decoder_output_tensor(out) + v),
            )
        for ids in prompts:
            out = lm.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
            expected.append(out[0, len(ids) :].tolist())
    t0 = time.perf_counter()
    llm = start_engine(checkpoint, sync=True, dtype="float32", seed=0, max_model_len=256)
    started = time.perf_counter() - t0
    try:
        set_down_proj_bias(llm, bias)
        sp = vllm.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)
        outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], sp, use_tqdm=False)
        got = [list(o.outputs[0].token_ids) for o in outs]
    finally:
        shutdown_engine(llm)
    same = sum(a == b for a, b in zip(got, expected))
    if same != len(prompts):
        print(
            f"vllm_check: FAILED: {vllm_version()} greedy tokens differ from transformers' with the same bias "
            f"({same}/{len(prompts)} equal): {got} vs {expected}",
            file=sys.stderr,
        )
        return 1
    print(
        f"vllm_check: ok: {vllm_version()} started in {started:.0f} s; with a bias set in place on every block its "
        f"greedy tokens equal transformers' with the hooked add ({same}/{len(prompts)} prompts, {NEW_TOKENS} tokens)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
