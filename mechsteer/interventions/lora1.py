"""`lora1`: a rank-1 LoRA on `mlp.down_proj` of chosen blocks (paper section 4.12), read from a safetensors
file with `A` [n_layers, d_ff], `B` [n_layers, d_model] and `layers` (int64, rows present).

A forward hook on down_proj sees its input z_t (SiLU(gate) * up) and its output m_t (the unadapted MLP
output) and returns m_t + scale * B (A . z_t). That is exactly the merged weight W + scale * B A^T (tested),
written as a fixed direction B^ = B/||B|| times the token-wise magnitude alpha_t = scale * (A . z_t) * ||B||.

For readouts, each forward call stores per adapted layer (detached, float32, shape [batch, tokens]) in
`ctx.extras["lora1"][layer]`: `alpha` (alpha_t), `mlp_norm` (||m_t||) and `cos` (cos(m_t, B^)) - the
quantities the paper plots. A later forward call replaces them (teacher-force once to read a sequence).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mechsteer.errors import CompileError, VectorError
from mechsteer.interventions.base import SteeringContext


def load_lora1(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(A, B, layers) from a lora1 file, with clear errors for every way it can be wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorError(
            f"lora1 file not found: {path}",
            hint="a relative path is read from the working directory unless the compiler made it "
            "absolute (InterventionBase.bind)",
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = {"A", "B"} - keys
            if missing:
                raise VectorError(
                    f"{path}: no tensor {', '.join(sorted(missing))} (found: {', '.join(sorted(keys))})",
                    hint="a lora1 file holds A [n_layers, d_ff], B [n_layers, d_model], layers [k]",
                )
            a, b = f.get_tensor("A").float(), f.get_tensor("B").float()
            layers = f.get_tensor("layers").tolist() if "layers" in keys else list(range(a.shape[0]))
    except (SafetensorError, OSError, ValueError) as e:
        raise VectorError(f"{path}: not a readable safetensors file ({e})") from None
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise VectorError(
            f"{path}: A {tuple(a.shape)} and B {tuple(b.shape)} must be [n_layers, d_ff] and "
            f"[n_layers, d_model] with the same n_layers"
        )
    bad = [i for i in layers if not 0 <= i < a.shape[0]]
    if bad:
        raise VectorError(f"{path}: layers {bad} outside 0..{a.shape[0] - 1}")
    return a, b, sorted(int(i) for i in layers)


def lora_hook(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, record: dict | None = None):
    """A forward hook on down_proj adding scale * B (A . z_t) to its output m_t (z_t = its input), computed in
    float32. `a` [d_ff] and `b` [d_model] may be trainable parameters (training uses this same hook).
    With `record`, each call stores alpha_t, ||m_t|| and cos(m_t, B^) there (detached, float32)."""

    def hook(module, args, output):
        z = args[0]
        coef = z.to(a.dtype) @ a  # [batch, tokens]: A . z_t
        if record is not None:
            with torch.no_grad():
                b_norm = b.norm()
                b_hat = b / b_norm if b_norm > 0 else torch.zeros_like(b)  # an untrained adapter has B = 0
                m = output.float()
                record["alpha"] = (scale * coef * b_norm).detach()
                record["mlp_norm"] = m.norm(dim=-1)
                record["cos"] = torch.nn.functional.cosine_similarity(m, b_hat.to(m.device).expand_as(m), dim=-1)
        return output + ((scale * coef).unsqueeze(-1) * b).to(output.dtype)

    return hook


def attach_lora1(spec, ctx: SteeringContext) -> None:
    """Hook each adapted block's down_proj with the rank-1 update from the adapter file, after checking that the
    file exists and fits the model; each hook records its token-wise magnitudes in `ctx.extras["lora1"]` for the
    `tokenwise` readout."""
    if getattr(spec, "train", None) and not Path(spec.path).is_file():
        raise CompileError(
            f"the training run's rank-1 LoRA is not there: {spec.path}",
            hint=f"train it first: `{spec.train_command()}`",
        )
    sh = ctx.shape
    a, b, rows = load_lora1(spec.path)
    if a.shape[0] != sh.n_layers or b.shape[1] != sh.d_model:
        raise CompileError(
            f"lora1 file {spec.path}: A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the model "
            f"[{sh.n_layers} layers x d_model {sh.d_model}]"
        )
    if spec.layer == "all":
        layers = rows
    else:
        layers = ctx.layers(spec.layer, "lora1.layer")
        missing = [i for i in layers if i not in rows]
        if missing:
            raise CompileError(f"lora1 file {spec.path} has no rows for layers {missing}", hint=f"its rows: {rows}")
    store = ctx.extras.setdefault("lora1", {})
    for i in layers:
        down = ctx.adapter.down_proj(ctx.model, i, "lora1")
        if down.in_features != a.shape[1]:
            raise CompileError(
                f"lora1 file {spec.path}: A has d_ff {a.shape[1]}, block {i}'s down_proj takes {down.in_features}"
            )
        if i in store:
            raise CompileError(f"block {i} already has a lora1 adapter in this condition")
        record = store[i] = {}
        hook = lora_hook(a[i].to(ctx.device), b[i].to(ctx.device), spec.scale, record)
        ctx.scope.forward_hook(down, hook)
