"""`mechsteer train`: RLOO training of steering vectors on a frozen model (the paper's recipe), plus the
LoRA-1 and full fine-tuning baselines.

Modules, one job each: `params` (what is trainable and how it enters the forward pass), `rollout`
(on-policy sampling with a shared prompt cache), `rloo` (advantages and loss), `rewards`, `data` (prompts
and their seeded order), `evaluate` (held-out accuracy), `checkpoint` (pickle-free, atomic, resumable),
`metrics` (JSONL log and plot) and `trainer` (the loop). Importing this package does not import torch;
the submodules do.
"""
