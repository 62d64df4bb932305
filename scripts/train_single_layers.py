"""Train the bundled single-layer steering vectors of the embedded model, one block at a time, and bundle them.

    python scripts/train_single_layers.py                       # every third block + the last two (12 runs)
    python scripts/train_single_layers.py --layers 3,9          # more blocks later; finished ones are skipped
    python scripts/train_single_layers.py --bundle-only         # rebuild the bundle from finished runs
    python scripts/train_single_layers.py --docs-only           # rewrite single_layers.md from single_layers.json
    python scripts/train_single_layers.py --bundle-only --keep-bundled \
        --rows-from mechsteer/data/vectors/smollm2-135m/attempts/block24.attempts.json   # a row trained longer

Training is the package's per-block driver, the same as
`mechsteer train studies/train_mini.yaml --profile single --per-block 0,6,12 --lr-rule norm`
(`mechsteer/train/per_block.py`): block k gets its own RLOO run with `setup: {single_layer: k}` under
`<the run's output folder>/layer-KK/` (default `outputs/train/train_mini-single/layer-KK/` next to the repository's
`studies/`; `--out` moves it), the layout a study reads with
`{kind: trained, train: <file>, profile: <profile>, per_block: [...], checkpoint: best}`. A finished run (its
`summary.json` has every step) is skipped; an interrupted one resumes from its last checkpoint, bit-for-bit.
The learning rate per block follows the profile's `per_block.lr_rule` (`norm` for `single`: lr_k = base_lr x
r_k / r_ref, r = the median residual norm after block k; why: the per-block driver's docstring); `--lr-rule file`
uses the file's `rloo.lr` / `rloo.lr_per_layer` instead. Other training files and profiles go through
`mechsteer train FILE -p PROFILE --per-block LAYERS` directly; this script exists for the bundle.

The bundle (`--bundle`, default on for the embedded model): one vector set
`mechsteer/data/vectors/smollm2-135m/single_layers.safetensors` with a row per trained block, each the run's best
checkpoint (held-out greedy lenient accuracy on 32 training-pool problems drawn with seed 1, so the test split the
studies use stays unseen), and beside it `single_layers.md` (settings, per-block compute time, selected
checkpoints, curves) and `single_layers.json` (the same as data), plus the training-curve plot under docs/img/.
Nothing in those files is typed by hand.

Rows trained longer (`--rows-from`): a block that does not learn in the driver's short budget is trained by an
attempts series (`scripts/train_attempts.py ATTEMPTS.yaml`, its own lr and steps, its checkpoint selected on more
problems); `--rows-from <ATTEMPTS>.attempts.json` puts that series' chosen checkpoint into the stack as the block's
row and links its record from the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FILE = ROOT / "studies" / "train_mini.yaml"
PROFILE = "single"
DEFAULT_LAYERS = "0,3,6,9,12,15,18,21,24,27,28,29"
BUNDLE_DIR = ROOT / "mechsteer" / "data" / "vectors" / "smollm2-135m"
PLOT = ROOT / "docs" / "img" / "single_layers_curves.png"


def run_dir(out_root: Path, layer: int) -> Path:
    from mechsteer.train.layout import per_block_dir

    return per_block_dir(out_root, layer)


def finished(folder: Path, steps: int | None) -> bool:
    from mechsteer.train import per_block

    return per_block.finished(folder, steps)


def loaded_spec(args):
    """The training file with the command line's lr-rule settings merged into `per_block`."""
    from mechsteer.spec.training import load_train_spec

    loaded = load_train_spec(args.train, args.profile)
    update = {k: v for k, v in (("base_lr", args.base_lr), ("ref_layer", args.ref_layer)) if v is not None}
    if update:
        loaded.spec = loaded.spec.model_copy(update={"per_block": loaded.spec.per_block.model_copy(update=update)})
    return loaded


def train_all(args, layers: list[int]) -> None:
    import torch

    from mechsteer.progress import RichTrainProgress
    from mechsteer.train.per_block import train_per_block

    torch.set_num_threads(args.threads)
    show = RichTrainProgress(bar=False)  # one line per step and per block, no bar (the output is often a log)
    train_per_block(loaded_spec(args), layers, args.out, lr_rule=args.lr_rule, steps=args.steps, progress=show)


def bundle(args, layers: list[int]) -> None:
    """Stack each block's row into one vector set and write its documentation. A row comes from, in order of
    precedence: an attempts record named by `--rows-from` (a block trained longer by scripts/train_attempts.py),
    a finished per-block run under the output folder, or (`--keep-bundled`) the current bundle."""
    import torch

    from mechsteer.atomic import atomic_write_text
    from mechsteer.machine import cpu_model
    from mechsteer.train.per_block import NORMS_FILE
    from mechsteer.vectors.vector_set import VectorSet, save_vector_set

    base = loaded_spec(args).spec
    steps = args.steps or base.rloo.steps
    from_attempts = _attempt_rows(args.rows_from or [], layers)
    done = [k for k in layers if k not in from_attempts and finished(run_dir(args.out, k), steps)]
    carried = _carried_rows(layers, [*done, *from_attempts], steps) if args.keep_bundled else {}
    norms = json.loads((args.out / NORMS_FILE).read_text())["median_norm"] if done else None
    sources = {**carried, **{k: _run_row(args.out, k, norms) for k in done}, **from_attempts}
    missing = [k for k in layers if k not in sources]
    if not sources:
        sys.exit(f"no finished run under {args.out} and no --rows-from / --keep-bundled rows; train first")
    first = next(iter(sources.values()))[0]
    rows = torch.zeros(args.n_layers, first.numel(), dtype=first.dtype)
    records = []
    for k, (row, record) in sorted(sources.items()):
        rows[k] = row
        records.append(record)
    done = sorted(sources)
    meta = {
        "source": "scripts/train_single_layers.py (studies/train_mini.yaml --profile single, one run per block)",
        "setup": "single_layer stack: row k trained alone at block k",
        "model": base.model.id,
        "steps": json.dumps({r["layer"]: r.get("steps", steps) for r in records}),
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
        "base_lr": base.per_block.base_lr,
        "ref_layer": base.per_block.ref_layer,
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


def _run_row(out: Path, k: int, norms: list[float]) -> tuple:
    """(row k, record) of block k's finished per-block run under `out`: its best checkpoint (`norms`: the median
    residual norm per block, read once by the caller from the driver's norms file)."""
    from mechsteer.train.layout import checkpoint_dir
    from mechsteer.train.metrics import MetricsLog
    from mechsteer.vectors.vector_set import load_vector_set

    folder = run_dir(out, k)
    best = json.loads((folder / "best.json").read_text())
    vs = load_vector_set(checkpoint_dir(folder / "checkpoints", best["step"]) / "vectors.safetensors")
    step_recs = [r for r in MetricsLog(folder / "metrics.jsonl").records() if r["type"] == "step"]
    run = json.loads((folder / "run.json").read_text())
    compute = json.loads((folder / "compute.json").read_text()) if (folder / "compute.json").is_file() else {}
    record = {
        "layer": k,
        "lr": run["spec"]["rloo"]["lr"],
        "steps": run["spec"]["rloo"]["steps"],
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
    return vs.vectors[k].clone(), record


def _attempt_rows(records: list[Path], layers: list[int]) -> dict:
    """{block: (row, record)} from attempts records (`<name>.attempts.json`, written by scripts/train_attempts.py):
    each record's chosen attempt, a single-block run, gives the row of its block: the checkpoint it selected,
    read from the attempts file's bundled vector (`bundle:`) when it has one, else from the attempt's run folder.
    The row's record keeps the attempt's own settings (steps, lr), its selection (more problems, a longer budget
    than a per-block run's) and a pointer to the attempts record, so the stack's table says which rows were
    trained longer and why."""
    from mechsteer.train.layout import checkpoint_dir
    from mechsteer.vectors.vector_set import load_vector_set

    current = BUNDLE_DIR / "single_layers.json"
    old_norms = (
        {r["layer"]: r["residual_norm"] for r in json.loads(current.read_text())["records"]}
        if current.is_file()
        else {}
    )
    out = {}
    for path in records:
        path = path.resolve()
        if not path.name.endswith(".attempts.json") or not path.is_file():
            sys.exit(
                f"--rows-from {path}: not an attempts record (`<name>.attempts.json` of scripts/train_attempts.py)"
            )
        info = json.loads(path.read_text())
        chosen = next((r for r in info["records"] if r["name"] == info["chosen"]), None)
        if chosen is None:
            sys.exit(f"--rows-from {path}: no attempt is chosen yet (none finished); run scripts/train_attempts.py")
        k = chosen["setup"].get("single_layer")
        if k is None or k not in layers:
            sys.exit(f"--rows-from {path}: its attempt trains setup {chosen['setup']}, not one of the blocks {layers}")
        step = chosen["best"]["step"]
        run_folder = ROOT / info["runs"] / chosen["name"]
        if info.get("bundle"):
            src = (path.parent / info["bundle"]).resolve()
        else:
            src = checkpoint_dir(run_folder / "checkpoints", step) / "vectors.safetensors"
        if not src.is_file():
            sys.exit(f"--rows-from {path}: the selected checkpoint {src} is missing (its runs are not here)")
        vs = load_vector_set(src)
        run_json = run_folder / "run.json"
        threads = json.loads(run_json.read_text()).get("threads") if run_json.is_file() else None
        sel = chosen.get("selection") or {}
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out[k] = (
            vs.vectors[k].clone(),
            {
                "layer": k,
                "lr": chosen["lr"],
                "steps": chosen["steps"],
                "residual_norm": old_norms.get(k),
                "best_step": step,
                "best_value": chosen["best"]["value"],
                "candidates": sel.get("candidates") or chosen["evals"],
                "selected_on": sel.get("settings"),
                "norm": float(vs.vectors[k].norm()),
                "train_seconds": chosen["train_seconds"],
                "wall_seconds": (chosen.get("compute") or {}).get("wall_seconds"),
                "cpu_seconds": (chosen.get("compute") or {}).get("cpu_seconds"),
                "threads": threads,
                "reward": chosen["reward"],
                "accuracy": chosen["accuracy"],
                "mean_len": chosen["mean_len"],
                # a link relative to the bundle's folder, as single_layers.md shows it
                "attempts": str(
                    path.relative_to(BUNDLE_DIR.resolve()) if path.is_relative_to(BUNDLE_DIR.resolve()) else path
                ).replace(".attempts.json", ".attempts.md"),
                "carried_from": {"commit": info.get("commit", "-"), "date": info["date"], "runs": info["runs"]},
            },
        )
        print(f"block {k}: row from {rel} (attempt {chosen['name']}, step {step})")
    return out


def _carried_rows(layers: list[int], done: list[int], steps: int) -> dict:
    """{block: (row, record)} for the requested blocks that have no finished run under the output folder but
    are in the current bundle: their vector row and their training record are kept as they are, each record
    marked with the commit, date and run folder of the sitting that made it (`carried_from`), so a bundle
    grown over several sittings never presents an old run as new. Only rows trained with the same number of
    steps are carried."""
    from mechsteer.vectors.vector_set import load_vector_set

    info_path = BUNDLE_DIR / "single_layers.json"
    if not info_path.is_file():
        return {}
    info = json.loads(info_path.read_text())
    if int(info["steps"]) != int(steps):
        sys.exit(f"--keep-bundled: the bundle's rows were trained for {info['steps']} steps, these for {steps}")
    old = load_vector_set(BUNDLE_DIR / "single_layers.safetensors")
    out = {}
    for record in info["records"]:
        k = record["layer"]
        if k in layers and k not in done:
            origin = record.get("carried_from") or {
                "commit": info["commit"],
                "date": info["date"],
                "runs": info["runs"],
            }
            out[k] = (old.vectors[k].clone(), {**record, "carried_from": origin})
    return out


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
        # rows from an attempts series were selected on more problems at a longer budget: a different
        # measurement, so they are drawn dashed rather than joined to the 12-step rows' scale silently
        style = "o--" if r.get("selected_on") else "o-"
        axes[2].plot([c2["step"] for c2 in cand], [100 * c2["value"] for c2 in cand], style, color=c)
    axes[0].set(title="training reward (T=1 rollouts)", xlabel="step", ylabel="mean reward")
    axes[1].set(title="mean rollout length", xlabel="step", ylabel="tokens")
    axes[2].set(
        title="greedy lenient acc. on the training pool\n(dashed: attempts selection, see the table)",
        xlabel="step",
        ylabel="%",
    )
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _markdown(info) -> str:
    rows = [
        "| block | lr | steps | residual norm | best step | held-out acc at best (%) | vector norm "
        "| reward first 3 -> last 3 | length first -> last | train s | CPU s | sitting |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["records"]:
        rew = r["reward"]
        cpu = "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.0f}"
        sel = r.get("selected_on")
        acc = f"{100 * r['best_value']:.1f}" + (f" ({sel['n']} @ {sel['max_new_tokens']})" if sel else "")
        rnorm = "-" if r["residual_norm"] is None else f"{r['residual_norm']:.0f}"
        rows.append(
            f"| {r['layer']} | {r['lr']:.4f} | {r.get('steps', info['steps'])} | {rnorm} | {r['best_step']} | {acc} "
            f"| {r['norm']:.2f} | {sum(rew[:3]) / 3:+.2f} -> {sum(rew[-3:]) / 3:+.2f} "
            f"| {r['mean_len'][0]:.0f} -> {r['mean_len'][-1]:.0f} | {r['train_seconds']:.0f} | {cpu} "
            f"| {_sitting(r, info)} |"
        )
    total = sum(r["train_seconds"] for r in info["records"])
    return "\n".join(
        [
            "# Bundled single-layer steering vectors (`smollm2-135m/single_layers`)",
            "",
            "Written by `python scripts/train_single_layers.py` (do not edit by hand), which trains with the per-block",
            "driver of `mechsteer train studies/train_mini.yaml --profile single --per-block <blocks> --lr-rule norm`:",
            "one RLOO run per block with only that block's vector trainable (`setup: {single_layer: k}`),",
            f"{info['steps']} steps of 8 prompts x 8 samples at T=1, at most 64 new tokens, reward `{info['reward']}`,",
            f"model in {info['model_dtype']}. lr_k = {info['base_lr']} x r_k / r_{info['ref_layer']} (r = median residual norm",
            "after the block; why: mechsteer/train/per_block.py). Each row is the run's best checkpoint by greedy",
            "lenient accuracy on 32 training-pool problems (seed 1; the test split is never seen).",
            *(
                [
                    "",
                    "Rows trained longer: where a block did not learn in the driver's budget, its row comes from an",
                    "attempts series (`scripts/train_attempts.py`, linked in the sitting column; put into the stack by",
                    "`--rows-from`) with its own lr and steps (the table's columns); its checkpoint was selected on more",
                    "training-pool problems at the study budget (shown as `n @ new tokens`). The blocks' budgets",
                    "therefore differ: compare blocks by their effect in the studies, not by their training cost.",
                ]
                if any(r.get("attempts") for r in info["records"])
                else []
            ),
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
            f"Per-step records: `{info['runs']}/layer-KK/metrics.jsonl` of the runs that made them"
            + (
                "; rows of an earlier sitting (`--keep-bundled`) keep their records and their run folder: "
                + ", ".join(sorted({r["carried_from"]["runs"] for r in info["records"] if r.get("carried_from")}))
                if any(r.get("carried_from") for r in info["records"])
                else ""
            )
            + ".",
            "",
        ]
    )


def _sitting(record: dict, info: dict) -> str:
    """Commit and date of the training sitting that made a row (a carried row keeps its own)."""
    origin = record.get("carried_from") or info
    if record.get("attempts"):
        return f"[attempts]({record['attempts']}), {origin['date']}"
    return f"{origin['commit']}, {origin['date']}"


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
    ap.add_argument(
        "--lr-rule", choices=["norm", "file"], default=None, help="per-block lr (default: the profile's per_block)"
    )
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per block (default: the profile's)")
    ap.add_argument("--base-lr", type=float, default=None, help="norm rule: lr of the reference block")
    ap.add_argument("--ref-layer", type=int, default=None, help="norm rule: the reference block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="output root (default: the training file's output folder)")
    ap.add_argument("--bundle-only", action="store_true", help="only rebuild the bundle from finished runs")
    ap.add_argument("--no-bundle", action="store_true", help="train only (the bundle is for the embedded model)")
    ap.add_argument(
        "--keep-bundled",
        action="store_true",
        help="keep the current bundle's rows (and their records) for requested blocks that have no finished run here",
    )
    ap.add_argument(
        "--rows-from",
        type=Path,
        action="append",
        help="an attempts record (<name>.attempts.json of scripts/train_attempts.py) whose chosen attempt gives its "
        "block's row (repeatable; takes precedence over a run under --out and over --keep-bundled)",
    )
    ap.add_argument("--docs-only", action="store_true", help="rewrite single_layers.md from single_layers.json")
    args = ap.parse_args()
    if args.docs_only:
        from mechsteer.atomic import atomic_write_text

        info = json.loads((BUNDLE_DIR / "single_layers.json").read_text())
        atomic_write_text(BUNDLE_DIR / "single_layers.md", _markdown(info))
        return
    loaded = loaded_spec(args)
    args.out = args.out or loaded.output_dir()
    from mechsteer.spec.models import known_shape
    from mechsteer.train.per_block import parse_layers

    shape = known_shape(loaded.spec.model.id, loaded.base_dir)
    if shape is None:
        sys.exit(f"the depth of {loaded.spec.model.id} is not known here; use mechsteer train --per-block")
    layers = parse_layers(args.layers, shape.n_layers, loaded.spec.model.id)
    args.n_layers = shape.n_layers
    if not args.bundle_only:
        train_all(args, layers)
    if not args.no_bundle and loaded.spec.model.id == "smollm2-135m":
        bundle(args, layers)


if __name__ == "__main__":
    main()
