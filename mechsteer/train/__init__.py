"""`mechsteer train`: RLOO training of steering vectors on a frozen model (the paper's recipe), plus the
LoRA-1 and full fine-tuning baselines.

Modules, one job each: `params` (what is trainable and how it enters the forward pass), `rollout`
(on-policy sampling with a shared prompt cache), `vllm_rollouts` (the same sampling on a vLLM engine), `rloo`
(advantages and loss), `rewards`, `data` (prompts and their seeded order), `evaluate` (held-out accuracy),
`checkpoint` (pickle-free, atomic, resumable), `layout` (where a run writes what; torch-free, the compiler
reads it), `metrics` (JSONL log and plot), `progress` (what a run reports while it runs; it never prints),
`trainer` (the loop) and `per_block` (one run per block, `--per-block`). Importing this package does not
import torch; most submodules do.
"""
