"""`mechsteer train FILE`: validate a training file and run RLOO training (registered by `cli/app.py`).

Problems in the file are raised as MechsteerError and printed by the app's error handler as
`file:line:col: field: message (hint: ...)`, exit code 1, no traceback. Heavy imports happen after
validation, so a broken file fails fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def train_command(
    file: Annotated[Path, typer.Argument(help="Training YAML file (see studies/train_mini.yaml).", show_default=False)],
    profile: Annotated[
        Optional[str], typer.Option("--profile", "-p", help="Profile to merge (e.g. mini, paper).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in the output folder.")
    ] = False,
    steps: Annotated[
        Optional[int], typer.Option("--steps", min=1, help="Override rloo.steps (total optimizer steps).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output folder (overrides `output:`).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    validate_only: Annotated[bool, typer.Option("--validate", help="Only validate the file, do not train.")] = False,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the file's held-out evaluation.")] = False,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (default: torch's choice; 1 is much faster on a busy machine).",
        ),
    ] = None,
    per_block: Annotated[
        Optional[str],
        typer.Option(
            "--per-block",
            help="Train one run per block (the paper's per-layer study) under <output>/layer-KK/: `all` or "
            "blocks like 3,9,last. The profile's setup must be {single_layer: k} or {lora1: k}. Finished "
            "blocks are skipped, interrupted ones resumed.",
        ),
    ] = None,
    lr_rule: Annotated[
        Optional[str],
        typer.Option(
            "--lr-rule",
            help="With --per-block: `file` (rloo.lr_per_layer[k], else rloo.lr) or `norm` (per_block.base_lr "
            "scaled by the block's residual norm); default: the file's per_block.lr_rule.",
        ),
    ] = None,
    rehearse: Annotated[
        bool,
        typer.Option(
            "--rehearse",
            help="Rehearse before GPU time: a random-weight twin, stand-in prompts, a few steps with checkpoints, "
            "then the best-checkpoint selection, into <output>-rehearsal/ (docs/rehearsal.md).",
        ),
    ] = False,
) -> None:
    """Train steering vectors (or a LoRA-1 / full fine-tuning baseline) with RLOO on a frozen model."""
    from rich.console import Console
    from rich.markup import escape

    from mechsteer.errors import MechsteerError
    from mechsteer.spec.training import load_train_spec

    console = Console(highlight=False)
    if rehearse:
        from mechsteer.cli.rehearse import rehearse_training

        if resume or steps is not None or validate_only:
            raise MechsteerError("--rehearse takes no --resume, --steps or --validate", hint="drop them")
        again = lambda f, pb, rule: train_command(  # noqa: E731 - the ordinary command on the rehearsed file
            f, per_block=pb, lr_rule=rule, threads=threads, quiet=quiet, no_eval=no_eval
        )
        return rehearse_training(
            file,
            profile,
            output=output,
            per_block=per_block,
            lr_rule=lr_rule,
            threads=threads,
            quiet=quiet,
            console=console,
            train=again,
        )
    loaded = load_train_spec(file, profile)
    out_dir = output if output is not None else loaded.output_dir()
    spec = loaded.spec
    if lr_rule is not None and lr_rule not in ("file", "norm"):
        raise MechsteerError(f"--lr-rule {lr_rule!r}: expected `file` or `norm`")
    if lr_rule is not None and per_block is None:
        raise MechsteerError("--lr-rule applies to --per-block runs", hint="add --per-block LAYERS")
    if per_block is not None:
        from mechsteer.train.per_block import block_setup

        if resume:
            raise MechsteerError("--per-block resumes interrupted blocks by itself", hint="drop --resume")
        block_setup(spec.setup, 0)
    console.print(
        f"[bold]{escape(spec.name)}[/]"
        + escape(
            (f" (profile {profile})" if profile else "")
            + f": {spec.model.id}, setup {_setup_text(spec.setup)}, reward {spec.reward} -> {out_dir}"
            + (
                f" (one run per block: {per_block}, lr rule {lr_rule or spec.per_block.lr_rule})"
                if per_block is not None
                else ""
            )
        )
    )
    if validate_only:
        console.print("[green]ok[/]")
        return

    import torch

    from mechsteer.progress import RichTrainProgress
    from mechsteer.train.trainer import Trainer

    progress = RichTrainProgress(console, bar=not quiet)
    if threads is not None:
        torch.set_num_threads(threads)
    if per_block is not None:
        from mechsteer.train.per_block import train_per_block

        runs = train_per_block(
            loaded,
            per_block,
            out_dir,
            lr_rule=lr_rule,
            steps=steps,
            progress=progress,
            run_eval=not no_eval,
        )
        for r in runs:
            lr = "" if r.status == "skipped" else f" lr {r.lr:.4g}"
            console.print(f"block {r.layer}: {r.status}{lr} -> {r.folder}")
        return
    trainer = Trainer.from_spec(loaded, output_dir=out_dir, steps=steps, progress=progress, run_eval=not no_eval)
    console.print(
        f"{trainer.params.n_params():,} trainable parameters; {len(trainer.pool)} prompts; "
        f"{trainer.total_steps} steps of {spec.rloo.prompts_per_step} x {spec.rloo.group_size} rollouts; "
        f"warm-up {trainer.warmup_steps}; checkpoint every {trainer.checkpoint_every}"
    )
    res = trainer.run(resume=resume)
    if res.eval_before and res.eval_after:
        for k in ("greedy", "sampled"):
            if k in res.eval_before and k in res.eval_after:
                b, a = res.eval_before[k], res.eval_after[k]
                console.print(
                    f"held-out {k}: lenient {b['lenient']:.3f} -> {a['lenient']:.3f}, "
                    f"boxed {b['boxed']:.3f} -> {a['boxed']:.3f}"
                )
    console.print(
        escape(
            f"trained {res.steps} steps in {res.train_seconds:.0f} s; "
            + (f"final: {res.final_path}" if res.final_path else f"checkpoints: {out_dir / 'checkpoints'}")
        )
    )


def _setup_text(setup) -> str:
    return setup if isinstance(setup, str) else str(setup.model_dump(mode="json"))


def select_checkpoints_command(
    output_dir: Annotated[
        Path,
        typer.Argument(
            help="Output folder of a study that evaluated training checkpoints (e.g. outputs/checkpoints-paper).",
            show_default=False,
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the selection, write nothing.")] = False,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="Evaluation metric averaged over the benchmarks: acc_boxed (the paper's) or acc_lenient "
            "(for models that never write \\boxed{}, such as the embedded one).",
        ),
    ] = "acc_boxed",
) -> None:
    """Write best.json into each training run a study evaluated: the checkpoint with the best six-benchmark
    Average (the paper's selection), read by studies as `checkpoint: best`."""
    from rich.console import Console

    from mechsteer.errors import MechsteerError
    from mechsteer.report.checkpoint_selection import select, write_best
    from mechsteer.results import Results

    console = Console(highlight=False)
    if metric not in ("acc_boxed", "acc_lenient"):
        raise MechsteerError(f"--metric {metric!r}: expected acc_boxed or acc_lenient")
    selection = select(Results.load(output_dir), metric)
    for e in selection:
        cands = ", ".join(f"{c['step']}: {100 * c['value']:.1f}" for c in e["candidates"])
        console.print(f"{e['run']}: step {e['step']} ({100 * e['value']:.1f}%; candidates {cands})")
    if dry_run:
        console.print(f"[yellow]dry run[/]: {len(selection)} runs, nothing written")
        return
    written = write_best(selection)
    console.print(f"[green]wrote[/] {len(written)} best.json files ({selection[0]['metric']})")
