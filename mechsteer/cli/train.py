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
) -> None:
    """Train steering vectors (or a LoRA-1 / full fine-tuning baseline) with RLOO on a frozen model."""
    from rich.console import Console
    from rich.markup import escape

    from mechsteer.spec.training import load_train_spec

    console = Console(highlight=False)
    loaded = load_train_spec(file, profile)
    out_dir = output if output is not None else loaded.output_dir()
    spec = loaded.spec
    console.print(
        f"[bold]{escape(spec.name)}[/]"
        + escape(
            (f" (profile {profile})" if profile else "")
            + f": {spec.model.id}, setup {_setup_text(spec.setup)}, reward {spec.reward} -> {out_dir}"
        )
    )
    if validate_only:
        console.print("[green]ok[/]")
        return

    import torch

    from mechsteer.train.trainer import Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    trainer = Trainer(
        loaded, output_dir=out_dir, steps=steps, console=console, progress=not quiet, run_eval=not no_eval
    )
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
