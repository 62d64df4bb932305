"""Copy the embedded model's rank-1 LoRA from its training run into the package, with its record.

    mechsteer train studies/train_mini.yaml --profile lora1 --steps 10 --no-eval --threads 1
    python scripts/bundle_lora1.py [--run outputs/train/train_mini-lora1]

Writes `mechsteer/data/adapters/smollm2-135m/lora1.safetensors` (the run's file, unchanged) and `lora1.md`
beside it (settings, compute time and the per-step training curve from the run's own records; nothing typed by
hand). `studies/tokenwise.yaml` reads it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "mechsteer" / "data" / "adapters" / "smollm2-135m"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "outputs" / "train" / "train_mini-lora1")
    args = ap.parse_args()
    src = args.run / "lora1.safetensors"
    if not src.is_file():
        raise SystemExit(f"{src} not found: train it first (see this script's docstring)")
    run = json.loads((args.run / "run.json").read_text())
    summary = json.loads((args.run / "summary.json").read_text())
    steps = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in steps if r.get("type") == "step"]
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, DEST / "lora1.safetensors")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    r = run["spec"]["rloo"]
    lines = [
        "# Bundled rank-1 LoRA for the embedded SmolLM2-135M-Instruct (`lora1.safetensors`)",
        "",
        "Written by `python scripts/bundle_lora1.py` from the run of `mechsteer train studies/train_mini.yaml "
        f"--profile lora1 --steps {summary['steps']}` (do not edit by hand). A rank-1 LoRA on `mlp.down_proj` of "
        f"every block ({run['trainable_parameters']:,} parameters), trained jointly with RLOO: {summary['steps']} steps "
        f"of {r['prompts_per_step']} prompts x {r['group_size']} samples at T=1, lr {r['lr']}, reward "
        f"`{run['spec']['reward']}`, {summary['train_seconds']:.0f} s of training, {run['threads']} torch thread(s), "
        f"commit {commit.strip()}.",
        "",
        "Used by `studies/tokenwise.yaml` (`{kind: lora1, path: ../mechsteer/data/adapters/smollm2-135m/lora1.safetensors}`).",
        "",
        "| step | mean reward (T=1) | rollout lenient accuracy | mean length |",
        "|---|---|---|---|",
        *(f"| {s['step']} | {s['reward_mean']:+.3f} | {s['accuracy']:.3f} | {s['mean_len']:.1f} |" for s in steps),
        "",
    ]
    (DEST / "lora1.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"bundled {src} -> {DEST / 'lora1.safetensors'}")


if __name__ == "__main__":
    main()
