"""Checkpoints: trainable tensors, AdamW state and RNG state, without pickle, written atomically.

Layout of `checkpoints/step-000053/`:
* `vectors.safetensors`: the vector set at this step (mechsteer format, metadata: step, reward mean,
  accuracy, lr, seed, model revision, ...) so any study can use a checkpoint directly (vector setups);
  `lora1.safetensors` for LoRA-1; nothing extra for full fine-tuning (its weights are in the state file);
* `state.safetensors`: `param/<name>` (the exact float32 trainable values), `opt/<i>/<key>` (AdamW moment
  tensors and step counts), `rng/torch` (the global torch RNG state);
* `state.json`: the step, parameter order, optimizer hyper-parameters and non-tensor state, a fingerprint
  of the spec, and how many metrics lines belong to this checkpoint.

The directory is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint that `--resume` could pick up. A fresh (not resumed) run first removes what an
earlier run left in its folder (`clear_previous_run`), so `checkpoint: N`, `best` or the final file can never
name another run's vectors.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from mechsteer.atomic import atomic_dir
from mechsteer.errors import MechsteerError
from mechsteer.train.layout import BEST_FILE, checkpoint_dir

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_steps(root: Path) -> dict[int, Path]:
    """Every complete checkpoint under `root`, by optimizer step."""
    if not root.is_dir():
        return {}
    found = {}
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / "state.json").is_file() and (p / "state.safetensors").is_file():
            found[int(m.group(1))] = p
    return found


RUN_FILES = ("vectors.safetensors", "lora1.safetensors", BEST_FILE, "summary.json", "train.png")
"""What a finished run writes beside `checkpoints/` (the final parameters, the best checkpoint's record, the
summary and the curves)."""


def clear_previous_run(out: Path) -> list[str]:
    """Remove an earlier run's checkpoints and final files from the output folder `out` before a fresh run
    writes there; other files (and per-block runs in `layer-*` sub-folders) stay. Returns what was removed."""
    removed = []
    ckpts = out / "checkpoints"
    if ckpts.is_dir():
        removed += sorted(p.name for p in ckpts.iterdir())
        shutil.rmtree(ckpts)
    for name in RUN_FILES:
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    return removed


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under `root` (None when there is none)."""
    found = checkpoint_steps(root)
    return found[max(found)] if found else None


def save_checkpoint(
    root: Path,
    step: int,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    info: dict,
    write_extra,
) -> Path:
    """Write checkpoint `step`; `write_extra(dir)` adds the exported vectors/adapters."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    with atomic_dir(final, prefix=f".step-{step:06d}.") as tmp:
        tensors: dict[str, torch.Tensor] = {}
        names = list(params)
        for n, p in params.items():
            tensors[f"param/{n}"] = p.detach().cpu().contiguous()
        sd = optimizer.state_dict()
        scalars: dict[str, dict] = {}
        for idx, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"opt/{idx}/{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        tensors["rng/torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "state.safetensors"))
        state = {"step": step, "param_names": names, "param_groups": sd["param_groups"], "opt_scalars": scalars, **info}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        write_extra(tmp)
    return final


def load_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> dict:
    """Restore trainable values, optimizer state and the torch RNG state in place; returns state.json."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    if state["param_names"] != list(params):
        raise MechsteerError(
            f"checkpoint {path} holds parameters {state['param_names'][:4]}..., this run trains {list(params)[:4]}...",
            hint="resume with the same setup, or start a fresh output folder",
        )
    with torch.no_grad():
        for n, p in params.items():
            src = tensors[f"param/{n}"]
            if src.shape != p.shape:
                raise MechsteerError(f"checkpoint {path}: {n} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
            p.copy_(src.to(p.device, p.dtype))
    opt_state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt/"):
            _, idx, k = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[k] = v
    for idx, sc in state.get("opt_scalars", {}).items():
        opt_state.setdefault(int(idx), {}).update(sc)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    return state


def select_best(evals: list[dict], checkpoint_steps: set[int], metric: str) -> dict | None:
    """The checkpoint with the highest held-out `metric` (`greedy_lenient`, `sampled_boxed`, ...) among the
    `evals` records taken at a checkpoint's step; ties go to the earliest step. Returns
    {step, metric, value, candidates: [{step, value}]} or None when no checkpoint was evaluated."""
    mode, _, grade = metric.partition("_")
    candidates = [
        {"step": r["step"], "value": float(r[mode][grade])}
        for r in evals
        if r["step"] in checkpoint_steps and mode in r and grade in r[mode]
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (c["value"], -c["step"]))
    return {"step": best["step"], "metric": metric, "value": best["value"], "candidates": candidates}
