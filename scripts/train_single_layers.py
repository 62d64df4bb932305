"""Train the bundled single-layer steering vectors of the embedded model, one block at a time, resumably.

    python scripts/train_single_layers.py                       # every sixth block + the last two (7 runs)
    python scripts/train_single_layers.py --layers 1,2,4        # more blocks later; finished ones are skipped
    python scripts/train_single_layers.py --bundle-only         # rebuild the bundle from finished runs
    python scripts/train_single_layers.py --train studies/train_paper.yaml --profile single_layer --layers all

Each block k gets its own RLOO run (by default `studies/train_mini.yaml --profile single`, with
`setup: {single_layer: k}`) under `<the run's output folder>/layer-KK/` (default
`outputs/train/train_mini-single/layer-KK/`), the layout a study reads with
`{kind: trained, train: <file>, profile: <profile>, per_block: [...], checkpoint: best}`. A finished run (its `summary.json` has every step) is skipped; an
interrupted one resumes from its last checkpoint, bit-for-bit. The model is loaded once for all runs.

Learning rate per block. Under Adam every coordinate moves by about lr per step whatever the gradient's size, so
a vector's norm grows at a rate set by lr alone, while the block's residual stream grows from ~40 (block 0) to
~700 (last blocks) on this model. A fixed lr would make early vectors huge and late ones negligible relative to
the stream they perturb. The paper faces the same and sets lr per block by hand (1e-2 early, 0.1 for the last
blocks of Qwen2.5-Math-7B). Here the rule is explicit: lr_k = base_lr x r_k / r_ref, where r_k is the median norm
of block k's output over the first 32 training prompts' tokens (BOS excluded) and ref = block 12, whose base_lr
0.05 a 6-step pilot showed to move the training reward. With `--lr-rule file` the training file's own lr
(and `rloo.lr_per_layer`, the paper's per-block table in train_paper.yaml) is used instead.

The bundle (`--bundle`, default on): one vector set `mechsteer/data/vectors/smollm2-135m/single_layers.safetensors`
with a row per trained block, each the run's best checkpoint (held-out greedy lenient accuracy on 32 training-pool
problems drawn with seed 1, so the test split the studies use stays unseen), and beside it `single_layers.md`
(settings, per-block compute time, selected checkpoints, curves) and `single_layers.json` (the same as data),
plus the training-curve plot under docs/img/. Nothing in those files is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FILE = ROOT / "studies" / "train_mini.yaml"
PROFILE = "single"
DEFAULT_LAYERS = "0,6,12,18,24,28,29"
BUNDLE_DIR = ROOT / "mechsteer" / "data" / "vectors" / "smollm2-135m"
PLOT = ROOT / "docs" / "img" / "single_layers_curves.png"


def residual_norms(lm, prompt_ids: list[list[int]]) -> list[float]:
    """Median L2 norm of each block's output over the prompts' tokens (BOS excluded), block by block.

    Read with forward hooks on the blocks, not `output_hidden_states`: transformers reports the last entry after
    the final norm, which is not the stream the last block's vector is added to."""
    import torch

    from mechsteer.models.adapters import decoder_output_tensor

    per_layer: list[list[float]] = [[] for _ in range(lm.shape.n_layers)]

    def hook(k):
        def record(_module, _args, out):
            per_layer[k].extend(decoder_output_tensor(out)[0, 1:].float().norm(dim=-1).tolist())

        return record

    handles = [blk.register_forward_hook(hook(k)) for k, blk in enumerate(lm.adapter.layers(lm.model))]
    try:
        with torch.no_grad():
            for ids in prompt_ids:
                lm.model(torch.tensor([ids], device=lm.device))
    finally:
        for h in handles:
            h.remove()
    return [float(torch.tensor(v).median()) for v in per_layer]


def run_dir(out_root: Path, layer: int) -> Path:
    from mechsteer.spec.training import per_block_dir

    return per_block_dir(out_root, layer)


def finished(folder: Path, steps: int) -> bool:
    p = folder / "summary.json"
    return p.is_file() and json.loads(p.read_text()).get("steps") == steps


def train_all(args, layers: list[int]) -> None:
    import torch

    from mechsteer.models.loading import load_model
    from mechsteer.spec.training import load_train_spec
    from mechsteer.train.checkpoint import latest_checkpoint
    from mechsteer.train.data import encode_prompts
    from mechsteer.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    loaded = load_train_spec(args.train, args.profile)
    base = loaded.spec
    steps = args.steps or base.rloo.steps
    todo = [k for k in layers if not finished(run_dir(args.out, k), steps)]
    print(f"{len(layers) - len(todo)} of {len(layers)} blocks already trained; to do: {todo}", flush=True)
    if not todo:
        return
    lm = load_model("policy", base.model, loaded.base_dir)
    norms_file = args.out / "residual_norms.json"
    if norms_file.is_file():
        norms = json.loads(norms_file.read_text())["median_norm"]
    else:
        from mechsteer.eval.mini_task import generate_mini

        rows = generate_mini("train", 32, seed=base.seed)
        ids = encode_prompts(lm, [r["problem"] for r in rows], base.data.template, base.data.prefix_token)
        norms = residual_norms(lm, ids)
        args.out.mkdir(parents=True, exist_ok=True)
        norms_file.write_text(json.dumps({"median_norm": norms, "prompts": 32, "ref_layer": args.ref_layer}, indent=1))
    for k in todo:
        if args.lr_rule == "norm":
            lr = args.base_lr * norms[k] / norms[args.ref_layer]
        else:
            per = base.rloo.lr_per_layer or {}
            lr = per.get(k, per.get(k - lm.shape.n_layers, base.rloo.lr))
        spec = base.model_copy(
            update={
                "name": f"{base.name}-layer-{k:02d}",
                "setup": base.setup.model_copy(update={"single_layer": k}),
                "rloo": base.rloo.model_copy(update={"lr": lr, "steps": steps}),
            }
        )
        folder = run_dir(args.out, k)
        resume = latest_checkpoint(folder / "checkpoints") is not None
        print(
            f"== block {k}: lr {lr:.4g} (residual norm {norms[k]:.0f}), {steps} steps"
            + (" (resuming)" if resume else ""),
            flush=True,
        )
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        Trainer(spec, lm=lm, output_dir=folder, base_dir=loaded.base_dir, progress=False).run(resume=resume)
        timing = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds() - cpu0, "resumed": resume}
        prev = folder / "compute.json"
        if resume and prev.is_file():  # add the interrupted part's compute
            old = json.loads(prev.read_text())
            timing = {k2: (timing[k2] + old.get(k2, 0.0) if k2 != "resumed" else True) for k2 in timing}
        prev.write_text(json.dumps(timing, indent=1))


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bundle(args, layers: list[int]) -> None:
    """Stack each finished block's best checkpoint into one vector set and write its documentation."""
    import torch

    from mechsteer.atomic import atomic_write_text
    from mechsteer.machine import cpu_model
    from mechsteer.spec.training import load_train_spec
    from mechsteer.train.metrics import MetricsLog
    from mechsteer.vectors.vector_set import VectorSet, load_vector_set, save_vector_set

    base = load_train_spec(args.train, args.profile).spec
    steps = args.steps or base.rloo.steps
    done = [k for k in layers if finished(run_dir(args.out, k), steps)]
    missing = [k for k in layers if k not in done]
    if not done:
        sys.exit(f"no finished run under {args.out}; train first")
    norms = json.loads((args.out / "residual_norms.json").read_text())["median_norm"]
    rows = None
    records = []
    for k in done:
        folder = run_dir(args.out, k)
        best = json.loads((folder / "best.json").read_text())
        vs = load_vector_set(folder / "checkpoints" / f"step-{best['step']:06d}" / "vectors.safetensors")
        if rows is None:
            rows = torch.zeros_like(vs.vectors)
        rows[k] = vs.vectors[k]
        metrics = MetricsLog(folder / "metrics.jsonl").records()
        step_recs = [r for r in metrics if r["type"] == "step"]
        run = json.loads((folder / "run.json").read_text())
        compute = json.loads((folder / "compute.json").read_text()) if (folder / "compute.json").is_file() else {}
        records.append(
            {
                "layer": k,
                "lr": run["spec"]["rloo"]["lr"],
                "residual_norm": norms[k],
                "best_step": best["step"],
                "best_value": best["value"],
                "candidates": best["candidates"],
                "norm": float(vs.vectors[k].norm()),
                "train_seconds": step_recs[-1]["train_seconds"],
                "wall_seconds": compute.get("wall_seconds"),
                "cpu_seconds": compute.get("cpu_seconds"),
                "threads": run.get("threads"),
                "reward": [r["reward_mean"] for r in step_recs],
                "accuracy": [r["accuracy"] for r in step_recs],
                "mean_len": [r["mean_len"] for r in step_recs],
            }
        )
    meta = {
        "source": "scripts/train_single_layers.py (studies/train_mini.yaml --profile single, one run per block)",
        "setup": "single_layer stack: row k trained alone at block k",
        "model": base.model.id,
        "steps": str(steps),
        "lrs": json.dumps({r["layer"]: round(r["lr"], 6) for r in records}),
        "best_steps": json.dumps({r["layer"]: r["best_step"] for r in records}),
        "commit": _commit(),
    }
    save_vector_set(VectorSet(rows, done, meta), BUNDLE_DIR / "single_layers.safetensors")
    _plot(records, PLOT)
    info = {
        "layers": done,
        "missing": missing,
        "steps": steps,
        "base_lr": args.base_lr,
        "ref_layer": args.ref_layer,
        "rloo": base.rloo.model_dump(mode="json"),
        "eval": base.eval.model_dump(mode="json") if base.eval else None,
        "reward": base.reward,
        "model_dtype": base.model.dtype,
        "records": records,
        "commit": _commit(),
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {cpu_model()}",
        "threads": sorted({r["threads"] for r in records if r.get("threads") is not None}),
        "runs": str(
            args.out.relative_to(ROOT) if args.out.is_absolute() and args.out.is_relative_to(ROOT) else args.out
        ),
    }
    atomic_write_text(BUNDLE_DIR / "single_layers.json", json.dumps(info, indent=1))
    atomic_write_text(BUNDLE_DIR / "single_layers.md", _markdown(info))
    print(f"bundled {len(done)} blocks -> {BUNDLE_DIR / 'single_layers.safetensors'}; missing: {missing}")


def _plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(records):
        c = cmap(i / max(1, len(records) - 1))
        x = range(1, len(r["reward"]) + 1)
        axes[0].plot(x, r["reward"], color=c, label=f"block {r['layer']}")
        axes[1].plot(x, r["mean_len"], color=c)
        cand = r["candidates"]
        axes[2].plot([c2["step"] for c2 in cand], [100 * c2["value"] for c2 in cand], "o-", color=c)
    axes[0].set(title="training reward (T=1 rollouts)", xlabel="step", ylabel="mean reward")
    axes[1].set(title="mean rollout length", xlabel="step", ylabel="tokens")
    axes[2].set(title="held-out greedy lenient acc. (training pool, seed 1)", xlabel="step", ylabel="%")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _markdown(info) -> str:
    rows = [
        "| block | lr | residual norm | best step | held-out acc at best (%) | vector norm | reward first 3 -> last 3 "
        "| length first -> last | train s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["records"]:
        rew = r["reward"]
        cpu = "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.0f}"
        rows.append(
            f"| {r['layer']} | {r['lr']:.4f} | {r['residual_norm']:.0f} | {r['best_step']} | {100 * r['best_value']:.1f} "
            f"| {r['norm']:.2f} | {sum(rew[:3]) / 3:+.2f} -> {sum(rew[-3:]) / 3:+.2f} "
            f"| {r['mean_len'][0]:.0f} -> {r['mean_len'][-1]:.0f} | {r['train_seconds']:.0f} | {cpu} |"
        )
    total = sum(r["train_seconds"] for r in info["records"])
    return "\n".join(
        [
            "# Bundled single-layer steering vectors (`smollm2-135m/single_layers`)",
            "",
            "Written by `python scripts/train_single_layers.py` (do not edit by hand). One RLOO run per block with only",
            "that block's vector trainable (`studies/train_mini.yaml --profile single` with `setup: {single_layer: k}`),",
            f"{info['steps']} steps of 8 prompts x 8 samples at T=1, at most 64 new tokens, reward `{info['reward']}`,",
            f"model in {info['model_dtype']}. lr_k = {info['base_lr']} x r_k / r_{info['ref_layer']} (r = median residual norm",
            "after the block; why: see the script's docstring). Each row is the run's best checkpoint by greedy",
            "lenient accuracy on 32 training-pool problems (seed 1; the test split is never seen).",
            "",
            f"Blocks: {info['layers']}" + (f"; not trained yet: {info['missing']}" if info["missing"] else "") + ".",
            f"Commit {info['commit']}, {info['date']}, {info['machine']}, torch threads per run {info['threads']} "
            "(two runs at a time on the 2 shared cores, so wall times are inflated; CPU time is the better measure), "
            f"{total:.0f} s of training in all (evaluations excluded).",
            "",
            "Use: `{kind: bundled, name: smollm2-135m/single_layers}`; the norm-matched control is",
            "`{kind: random, norm_like: <that vector set>, seed: 0}` (per-row norms).",
            "",
            *rows,
            "",
            "![training curves](../../../../docs/img/single_layers_curves.png)",
            "",
            f"Per-step records: `{info['runs']}/layer-KK/metrics.jsonl` of the runs that made them.",
            "",
        ]
    )


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=TRAIN_FILE, help="training file (default: %(default)s)")
    ap.add_argument("--profile", default=PROFILE, help="its profile (default: %(default)s)")
    ap.add_argument("--layers", default=DEFAULT_LAYERS, help="comma-separated blocks or `all` (default: %(default)s)")
    ap.add_argument("--lr-rule", choices=["norm", "file"], default="norm", help="per-block lr (see the docstring)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per block (default: the profile's)")
    ap.add_argument("--base-lr", type=float, default=0.05, help="lr of the reference block")
    ap.add_argument("--ref-layer", type=int, default=12, help="the reference block of the lr rule")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="output root (default: the training file's output folder)")
    ap.add_argument("--bundle-only", action="store_true", help="only rebuild the bundle from finished runs")
    ap.add_argument("--no-bundle", action="store_true", help="train only (the bundle is for the embedded model)")
    args = ap.parse_args()
    from mechsteer.spec.training import load_train_spec

    loaded = load_train_spec(args.train, args.profile)
    args.out = args.out or loaded.output_dir()
    if args.layers == "all":
        from mechsteer.spec.models import known_shape

        shape = known_shape(loaded.spec.model.id)
        if shape is None:
            sys.exit(f"--layers all: the depth of {loaded.spec.model.id} is not known here; list the blocks")
        layers = list(range(shape.n_layers))
    else:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
    if not args.bundle_only:
        train_all(args, layers)
    if not args.no_bundle and loaded.spec.model.id == "smollm2-135m":
        bundle(args, layers)


if __name__ == "__main__":
    main()
