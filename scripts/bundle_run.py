"""Bundle the final vectors of a finished `mechsteer train` run into the package, with a generated record.

    python scripts/bundle_run.py outputs/train/train_mini-gemma gemma3-270m/all_layers

Copies `<run>/vectors.safetensors` unchanged to `mechsteer/data/vectors/<name>.safetensors` and writes beside
it `<name>.md` (the training file, profile and settings as run, the held-out evaluations before and after, every
step's reward, accuracy and length, compute, and the run's curve plot copied as `<name>.png`) and `<name>.json`
(the same as data). Nothing in those files is typed by hand. The run must be finished (its `summary.json`
exists): a bundle never holds a half-trained set without saying so.

Why a script and not a `mechsteer` command: bundling writes into the package's own data folder, which only
maintainers of the embedded models do; users point studies at their runs with `{kind: trained, ...}`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = ROOT / "mechsteer" / "data" / "vectors"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def record(run: Path) -> dict:
    """The run's settings, evaluations, per-step metrics and compute, read from its files."""
    from mechsteer.machine import cpu_model

    summary = json.loads((run / "summary.json").read_text())
    info = json.loads((run / "run.json").read_text())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in lines if r.get("type") == "step"]
    evals = [r for r in lines if r.get("type") == "eval"]
    spec = info["spec"]
    return {
        "training_file": (
            f"studies/{spec.get('name')}.yaml"
            if (ROOT / "studies" / f"{spec.get('name')}.yaml").is_file()
            else f"<the training file named {spec.get('name')}>"
        ),
        "name": spec.get("name"),
        "profile": info.get("profile"),
        "model": info.get("model"),
        "setup": summary.get("setup"),
        "trainable_parameters": summary.get("trainable_parameters"),
        "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "threads": info.get("threads"),
        "torch": info.get("torch"),
        "rloo": spec.get("rloo"),
        "reward": spec.get("reward"),
        "data": spec.get("data"),
        "model_spec": spec.get("model"),
        "eval_spec": spec.get("eval"),
        "evals": [{"step": e["step"], **{k: e[k] for k in ("greedy", "sampled") if k in e}} for e in evals],
        "per_step": [
            {
                k: s.get(k)
                for k in ("step", "reward_mean", "accuracy", "boxed_accuracy", "mean_len", "lr", "grad_norm", "t_step")
            }
            for s in steps
        ],
        "commit": _commit(),
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {cpu_model()}",
    }


def markdown(name: str, rec: dict, plot: str | None) -> str:
    """The bundle's record as Markdown (generated from `record`)."""
    rloo = rec["rloo"] or {}
    ev_rows = [
        f"| {e['step']} | {_pct(e.get('greedy', {}).get('lenient'))} | {_pct(e.get('greedy', {}).get('boxed'))} "
        f"| {e.get('greedy', {}).get('mean_len', float('nan')):.1f} |"
        for e in rec["evals"]
    ]
    step_rows = [
        f"| {s['step']} | {s['reward_mean']:+.3f} | {_pct(s['accuracy'])} | {_pct(s['boxed_accuracy'])} "
        f"| {s['mean_len']:.1f} | {s['t_step']:.0f} |"
        for s in rec["per_step"]
    ]
    model_spec = rec["model_spec"] or {}
    return "\n".join(
        [
            f"# Bundled steering vectors `{name}`",
            "",
            f"Written by `python scripts/bundle_run.py` (do not edit by hand) from the finished run of "
            f"`mechsteer train {rec['training_file']} -p {rec['profile']}` (setup `{rec['setup']}`, "
            f"{rec['trainable_parameters']:,} trainable parameters); the vectors are the run's final step, copied unchanged.",
            "",
            f"- model: `{model_spec.get('id')}` in {model_spec.get('dtype')}, stop {model_spec.get('stop')}; "
            f"template `{(rec['data'] or {}).get('template')}`, task `{(rec['data'] or {}).get('kind')}` (train split)",
            f"- RLOO: {rec['steps']} steps of {rloo.get('prompts_per_step')} prompts x {rloo.get('group_size')} samples "
            f"at T={rloo.get('temperature')}, at most {rloo.get('max_new_tokens')} new tokens, reward `{rec['reward']}`, "
            f"lr {rloo.get('lr')}"
            + (" with a per-block table (the training file's profile)" if rloo.get("lr_per_layer") else ""),
            f"- compute: {rec['train_seconds']:.0f} s of training (evaluations excluded), {rec['threads']} torch thread(s), "
            f"torch {rec['torch']}, on {rec['machine']} shared with other jobs; commit {rec['commit']}, {rec['date']}",
            "",
            "Held-out evaluation (the test split, never trained on; greedy; no checkpoint was selected on it):",
            "",
            "| step | lenient acc. (%) | boxed acc. (%) | mean length |",
            "|---|---|---|---|",
            *ev_rows,
            "",
            "Training steps (T=1 rollouts):",
            "",
            "| step | mean reward | acc. (%) | boxed acc. (%) | mean length | step s |",
            "|---|---|---|---|---|---|",
            *step_rows,
            "",
            *([f"![training curves]({plot})", ""] if plot else []),
            "The held-out effect against a norm-matched random control is measured by the studies that use the set",
            "(e.g. `mechsteer run studies/quickstart.yaml -p gemma`), never typed here.",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished `mechsteer train` output folder")
    ap.add_argument("name", help="bundle name, <model id>/<set name>, e.g. gemma3-270m/all_layers")
    args = ap.parse_args()
    run = args.run.resolve()
    if not (run / "summary.json").is_file() or not (run / "vectors.safetensors").is_file():
        sys.exit(
            f"error: {run} is not a finished training run (no summary.json / vectors.safetensors); finish it first"
        )
    if args.name.count("/") != 1:
        sys.exit(f"error: name {args.name!r}: use <model id>/<set name>, e.g. gemma3-270m/all_layers")
    from mechsteer.atomic import atomic_write_text

    target = BUNDLE_ROOT / f"{args.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "vectors.safetensors", target)
    rec = record(run)
    plot = None
    if (run / "train.png").is_file():
        shutil.copyfile(run / "train.png", target.with_suffix(".png"))
        plot = target.with_suffix(".png").name
    atomic_write_text(target.with_suffix(".json"), json.dumps(rec, indent=1))
    atomic_write_text(target.with_suffix(".md"), markdown(args.name, rec, plot))
    print(f"bundled {run / 'vectors.safetensors'} -> {target} (+ .md, .json{', .png' if plot else ''})")


if __name__ == "__main__":
    main()
