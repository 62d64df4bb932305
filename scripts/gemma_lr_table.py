"""The per-block learning rates of the `gemma` training profile (studies/train_mini.yaml), from both models'
residual-stream norms, so that a Gemma vector moves its stream by the same relative amount per step as the
SmolLM2 all-layer vectors moved theirs.

Why per block: under Adam every coordinate moves by about lr per step whatever the gradient's size, so a
vector's norm grows by about lr x sqrt(d_model) per step, set by lr alone. Gemma 3 270M's residual stream
grows from ~10^2 (block 0) to ~3 x 10^4 (block 17), a span of two and a half orders of magnitude (SmolLM2's:
45 to 783), so no single lr suits every block. The rule: the relative step lr x sqrt(d) / r stays what the
SmolLM2 profile's single lr gives at its median block,

    lr_k(gemma) = lr(smol) x [sqrt(d_smol) / median_j r_j(smol)] x r_k(gemma) / sqrt(d_gemma),

with r_k the median norm of block k's output over the first 32 training prompts' tokens (BOS excluded;
`scripts/train_single_layers.py:residual_norms`), each model in its training dtype, rendered with its
training template.

Usage: python scripts/gemma_lr_table.py [--write]   (--write replaces the `lr_per_layer:` line of the gemma
profile in studies/train_mini.yaml, the one marked with this script's name)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "studies" / "train_mini.yaml"
MARK = "# scripts/gemma_lr_table.py"


def _residual_norms():
    spec = importlib.util.spec_from_file_location("train_single_layers", ROOT / "scripts" / "train_single_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.residual_norms


def norms_for(profile: str | None) -> tuple[list[float], int, float]:
    """(median residual norm per block, d_model, the profile's lr) for a profile of the training file."""
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.models.loading import load_model
    from mechsteer.spec.training import load_train_spec
    from mechsteer.train.data import encode_prompts

    loaded = load_train_spec(TRAIN, profile)
    s = loaded.spec
    lm = load_model("policy", s.model, loaded.base_dir)
    rows = generate_mini("train", 32, seed=s.seed)
    ids = encode_prompts(lm, [r["problem"] for r in rows], s.data.template, s.data.prefix_token)
    return _residual_norms()(lm, ids), lm.shape.d_model, s.rloo.lr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the table into studies/train_mini.yaml")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    r_s, d_s, lr_s = norms_for(None)
    r_g, d_g, _ = norms_for("gemma")
    rel = lr_s * math.sqrt(d_s) / statistics.median(r_s)
    table = {k: float(f"{rel * r / math.sqrt(d_g):.3g}") for k, r in enumerate(r_g)}
    print(f"SmolLM2 median residual norms per block: {[round(x) for x in r_s]}")
    print(f"Gemma median residual norms per block:   {[round(x) for x in r_g]}")
    print(f"relative step per optimizer step: {rel:.3g}")
    line = "lr_per_layer: {" + ", ".join(f"{k}: {v:g}" for k, v in table.items()) + "}"
    print(line)
    if args.write:
        text = TRAIN.read_text()
        pattern = re.compile(r"^(\s*)lr_per_layer: \{[^}\n]*\}  " + re.escape(MARK) + r"$", re.MULTILINE)
        if not pattern.search(text):
            raise SystemExit(f"{TRAIN}: no `lr_per_layer: {{...}}  {MARK}` line to replace")
        TRAIN.write_text(pattern.sub(lambda m: f"{m.group(1)}{line}  {MARK}", text, count=1))
        print(f"wrote {TRAIN}")


if __name__ == "__main__":
    main()
