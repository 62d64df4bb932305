"""One training run per block: the paper's per-layer study (`mechsteer train FILE -p P --per-block LAYERS`).

The training file's profile says what one block's run is (`setup: {single_layer: k}` for a single-layer
vector s_k, `setup: {lora1: k}` for the single-block rank-1 LoRA of Appendix S); this driver runs it for each
listed block k under `<output>/layer-KK/`, the layout a study reads with `{kind: trained, ..., per_block: ...}`
(or `{kind: lora1, ..., per_block: true}`). The model is loaded once for all blocks. A finished block (its
`summary.json` has every step) is skipped; an interrupted one resumes from its last checkpoint, bit for bit.

Learning rate of block k (`per_block.lr_rule` in the file, `--lr-rule` on the command line):
* `file`: `rloo.lr_per_layer[k]` when the table has k, else `rloo.lr` (the paper's per-layer tables);
* `norm`: `base_lr x r_k / r_ref`, r = the median norm of the block's output (BOS excluded) over the first
  `norm_prompts` training prompts, cached in `<output>/residual_norms.json`. Under Adam every coordinate moves
  by about lr per step whatever the gradient's size, so a vector's norm grows at a rate set by lr alone while
  the stream it perturbs grows with depth; this rule keeps the ratio the same for every block.
Each block's run records the lr it used as `rloo.lr` (the table is dropped from that run's spec), so its
`run.json` and the `lr` metadata of its vector files say what training did.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from mechsteer.errors import MechsteerError
from mechsteer.spec.layers import LayerResolutionError, resolve_layer
from mechsteer.spec.training import LoadedTrainSpec, Lora1Setup, SingleLayerSetup
from mechsteer.train.layout import per_block_dir
from mechsteer.train.progress import TrainProgress

NORMS_FILE = "residual_norms.json"


@dataclass
class BlockRun:
    """What the driver did for one block."""

    layer: int
    lr: float
    folder: Path
    status: str
    """`trained`, `resumed` or `skipped` (already finished)."""


def block_setup(setup, layer: int):
    """The setup of block `layer`'s run: the profile's single-layer or LoRA-1 setup moved to that block."""
    if isinstance(setup, SingleLayerSetup):
        return SingleLayerSetup(single_layer=layer)
    if isinstance(setup, Lora1Setup):
        return Lora1Setup(lora1=[layer])
    what = setup if isinstance(setup, str) else setup.model_dump(mode="json")
    raise MechsteerError(
        f"--per-block trains one run per block, so the setup must be a single block: got {what}",
        hint="use a profile with `setup: {single_layer: k}` (a vector) or `setup: {lora1: k}` (a rank-1 LoRA)",
    )


def parse_layers(text: str, n_layers: int, model_id: str) -> list[int]:
    """`all`, or comma-separated block references (`3,9`, `-1`, `last`) resolved against the model's depth."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise MechsteerError("--per-block: no block given", hint="e.g. --per-block 0,6,12 or --per-block all")
    refs = [int(x) if x.lstrip("-").isdigit() else x for x in items]
    try:
        return sorted({i for r in refs for i in resolve_layer(r, n_layers)})
    except LayerResolutionError as e:
        raise MechsteerError(f"--per-block {text}: {e} (model {model_id}, blocks 0..{n_layers - 1})") from None


def block_lr(loaded: LoadedTrainSpec, layer: int, n_layers: int, rule: str, norms: list[float] | None) -> float:
    """Block `layer`'s learning rate under `rule` (see the module docstring)."""
    spec = loaded.spec
    if rule == "norm":
        assert norms is not None
        ref = resolve_layer(spec.per_block.ref_layer, n_layers)[0]
        return spec.per_block.base_lr * norms[layer] / norms[ref]
    table = {resolve_layer(k, n_layers)[0]: v for k, v in (spec.rloo.lr_per_layer or {}).items()}
    return table.get(layer, spec.rloo.lr)


def residual_norms(lm, prompt_ids: list[list[int]]) -> list[float]:
    """Median L2 norm of each block's output over the prompts' tokens (BOS excluded), block by block.

    Read with forward hooks on the blocks, not `output_hidden_states`: transformers reports the last entry after
    the final norm, which is not the stream the last block's vector is added to."""
    import torch

    from mechsteer.hooks import HookScope
    from mechsteer.models.adapters import decoder_output_tensor

    per_layer: list[list[float]] = [[] for _ in range(lm.shape.n_layers)]

    def hook(k):
        def record(_module, _args, out):
            per_layer[k].extend(decoder_output_tensor(out)[0, 1:].float().norm(dim=-1).tolist())

        return record

    with HookScope("residual_norms") as scope, torch.no_grad():
        for k in range(lm.shape.n_layers):
            scope.forward_hook(lm.adapter.layer(lm.model, k), hook(k))
        for ids in prompt_ids:
            lm.model(torch.tensor([ids], device=lm.device))
    return [float(torch.tensor(v).median()) for v in per_layer]


def _norm_prompts(loaded: LoadedTrainSpec, n: int) -> list[str]:
    """The first `n` training problems (the bundled task: the seed's train draw, as the SmolLM2 stack used)."""
    spec = loaded.spec
    if spec.data.kind == "mini":
        from mechsteer.eval.mini_task import generate_mini

        return [r["problem"] for r in generate_mini("train", n, seed=spec.seed)]
    from mechsteer.train.data import load_problems

    return [r["problem"] for r in load_problems(spec.data, loaded.resolve_path, spec.seed)[:n]]


def block_norms(loaded: LoadedTrainSpec, lm, out: Path) -> list[float]:
    """r_k for the `norm` rule, computed once and kept in `<out>/residual_norms.json`."""
    from mechsteer.atomic import atomic_write_text
    from mechsteer.train.data import encode_prompts

    f = out / NORMS_FILE
    if f.is_file():
        return json.loads(f.read_text())["median_norm"]
    pb, data = loaded.spec.per_block, loaded.spec.data
    ids = encode_prompts(lm, _norm_prompts(loaded, pb.norm_prompts), data.template, data.prefix_token)
    norms = residual_norms(lm, ids)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        f, json.dumps({"median_norm": norms, "prompts": pb.norm_prompts, "ref_layer": pb.ref_layer}, indent=1)
    )
    return norms


def finished(folder: Path, steps: int | None) -> bool:
    """Whether the run in `folder` is complete: its summary has `steps` steps (None: the run's own total)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return False
    done = json.loads(summary.read_text()).get("steps")
    if steps is None:
        run = folder / "run.json"
        steps = json.loads(run.read_text()).get("total_steps") if run.is_file() else None
    return steps is not None and done == steps


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_per_block(
    loaded: LoadedTrainSpec,
    layers: str | list[int],
    out: Path,
    *,
    lm=None,
    lr_rule: str | None = None,
    steps: int | None = None,
    progress: TrainProgress | None = None,
    run_eval: bool = True,
    rows: list[dict] | None = None,
    eval_rows: list[dict] | None = None,
    reward_fn=None,
) -> list[BlockRun]:
    """Train (or resume, or skip) block k's run under `<out>/layer-KK/` for every k in `layers` (a list of
    indices, or the `--per-block` text: `all`, `3,9`, `last`, resolved against the model's depth).

    `lr_rule` overrides the file's `per_block.lr_rule`; `steps` its `rloo.steps`. `lm`, `rows`, `eval_rows` and
    `reward_fn` are passed to every block's Trainer (tests use tiny models), and so is `progress`, which also
    gets a message per block. Loads the model once, unless `lm` is given. Writes `compute.json` (wall and CPU
    seconds, summed over resumed parts) into each block's folder."""
    from mechsteer.train.checkpoint import latest_checkpoint
    from mechsteer.train.trainer import Trainer, check_rollouts

    progress = progress or TrainProgress()
    base = loaded.spec
    rule = lr_rule or base.per_block.lr_rule
    block_setup(base.setup, 0)  # the setup must be a single block before anything loads
    if isinstance(layers, str):
        from mechsteer.spec.models import known_shape

        shape = known_shape(base.model.id, loaded.base_dir)
        if shape is None and lm is None:
            from mechsteer.models.loading import load_model

            lm = load_model("policy", base.model, loaded.base_dir)
        layers = parse_layers(layers, shape.n_layers if shape else lm.shape.n_layers, base.model.id)
    want = steps or base.rloo.steps
    todo = [k for k in layers if not finished(per_block_dir(out, k), want)]
    done = [BlockRun(k, float("nan"), per_block_dir(out, k), "skipped") for k in layers if k not in todo]
    progress.message(f"{len(layers) - len(todo)} of {len(layers)} blocks already trained; to do: {todo}")
    if not todo:
        return done
    if lm is None:
        from mechsteer.models.loading import load_model

        check_rollouts(base)
        lm = load_model("policy", base.model, loaded.base_dir)
    n_layers = lm.shape.n_layers
    bad = [k for k in layers if not 0 <= k < n_layers]
    if bad:
        raise MechsteerError(f"--per-block: blocks {bad} are outside {base.model.id}'s 0..{n_layers - 1}")
    norms = block_norms(loaded, lm, out) if rule == "norm" else None
    runs = list(done)
    for k in todo:
        lr = block_lr(loaded, k, n_layers, rule, norms)
        rloo = base.rloo.model_copy(update={"lr": lr, "steps": want, "lr_per_layer": None})
        spec = base.model_copy(
            update={"name": f"{base.name}-layer-{k:02d}", "setup": block_setup(base.setup, k), "rloo": rloo}
        )
        folder = per_block_dir(out, k)
        resume = latest_checkpoint(folder / "checkpoints") is not None
        why = f" (residual norm {norms[k]:.0f})" if norms is not None else ""
        progress.message(f"== block {k}: lr {lr:.4g} [{rule}]{why}" + (" (resuming)" if resume else ""))
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        Trainer(
            spec,
            lm=lm,
            output_dir=folder,
            base_dir=loaded.base_dir,
            steps=want,
            progress=progress,
            run_eval=run_eval,
            rows=rows,
            eval_rows=eval_rows,
            reward_fn=reward_fn,
        ).run(resume=resume)
        timing = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds() - cpu0, "resumed": resume}
        prev = folder / "compute.json"
        if resume and prev.is_file():  # add the interrupted part's compute
            old = json.loads(prev.read_text())
            timing = {key: (timing[key] + old.get(key, 0.0) if key != "resumed" else True) for key in timing}
        prev.write_text(json.dumps(timing, indent=1))
        runs.append(BlockRun(k, lr, folder, "resumed" if resume else "trained"))
    return sorted(runs, key=lambda r: r.layer)
