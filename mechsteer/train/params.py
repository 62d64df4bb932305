"""Trainable parameterisations: what RLOO optimises while the model stays frozen.

* `BlockVectors`: one float32 vector per chosen decoder block, added to the block's output at every token
  position (prompt and generated) by a forward hook. This is exactly the authors' `down_proj` bias
  (digest section 3.1) and exactly what the `add` intervention does with the exported vector set, so a
  trained set reproduces the trainer's forward pass bit for bit (tested).
* `PlaceVector`: one vector added to the output of a named submodule of one block (`steering_at_place`).
* `Lora1`: rank-1 LoRA on `mlp.down_proj` (alpha = rank = 1, PEFT's default init: A Kaiming-uniform,
  B zero), the paper's token-wise magnitude baseline.
* `FullModel`: every weight trainable, the full fine-tuning baseline (no hooks).

Every parameterisation starts as the identity (zero vectors, B = 0), keeps every model weight at
`requires_grad=False` (except `FullModel`), and attaches its hooks through a `HookScope` owned by the
caller, so nothing outlives training. Trainable tensors are float32 (the model may be bfloat16); they are
cast to the activation dtype inside the hook, which is also what the `add` intervention does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mechsteer.hooks import HookScope
from mechsteer.interventions.add import add_hook
from mechsteer.interventions.lora1 import lora_hook
from mechsteer.models.adapters import ArchitectureAdapter
from mechsteer.vectors.vector_set import VectorSet


def freeze(model: nn.Module) -> None:
    """Set requires_grad=False on every model weight."""
    for p in model.parameters():
        p.requires_grad_(False)


class Parameterisation:
    """Interface: named trainable tensors (stable names, used by checkpoints), the block each belongs to
    (for per-layer learning rates), hooks, and an export."""

    kind: str = "?"

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """The trainable tensors by stable name: the names key checkpoints and the optimizer's state, so they must not
        change between runs."""
        raise NotImplementedError

    def block_of(self, name: str) -> int | None:
        """The decoder block a trainable tensor belongs to (None: not block-specific)."""
        return None

    def attach(self, scope: HookScope) -> None:
        """Register the forward hooks that make the parameters take effect (none for FullModel)."""

    def detach(self) -> None:
        """Undo anything beyond hooks (FullModel re-freezes the weights)."""

    def n_params(self) -> int:
        """How many numbers training updates (shown before a run and recorded in `run.json`)."""
        return sum(p.numel() for p in self.named_trainable().values())

    def describe(self) -> str:
        """A short text naming the setup (`all_layers`, `lora1 3,9`, ...), recorded in metadata and shown in plots."""
        return self.kind


class BlockVectors(Parameterisation):
    """One zero-initialised float32 vector per chosen block, added after the block (= down_proj bias)."""

    kind = "vectors"

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, layers: list[int]):
        freeze(model)
        shape = adapter.shape(model)
        self.model, self.adapter = model, adapter
        self.n_layers, self.d_model = shape.n_layers, shape.d_model
        self.layers = sorted(layers)
        dev = next(model.parameters()).device
        self.vectors = {
            i: nn.Parameter(torch.zeros(shape.d_model, dtype=torch.float32, device=dev)) for i in self.layers
        }

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """`layer.<i>` -> block i's vector."""
        return {f"layer.{i}": p for i, p in self.vectors.items()}

    def block_of(self, name: str) -> int | None:
        """The block index in a `layer.<i>` name."""
        return int(name.split(".")[1])

    def attach(self, scope: HookScope) -> None:
        """Add each vector to its block's output through a forward hook (what `add` does at inference)."""
        for i, p in self.vectors.items():
            scope.forward_hook(self.adapter.layer(self.model, i), add_hook(p))

    def to_vector_set(self, **meta: object) -> VectorSet:
        """The trained vectors as a mechsteer VectorSet ([n_layers, d_model], rows = trained blocks)."""
        out = torch.zeros(self.n_layers, self.d_model)
        for i, p in self.vectors.items():
            out[i] = p.detach().cpu()
        return VectorSet(out, self.layers, {k: str(v) for k, v in meta.items()})

    def describe(self) -> str:
        """`all_layers` when every block has a vector, else `layers i,j,...`."""
        if len(self.layers) == self.n_layers:
            return "all_layers"
        return "layers " + ",".join(map(str, self.layers))


class PlaceVector(Parameterisation):
    """One zero-initialised vector added to the output of submodule `place` of block `layer`."""

    kind = "at_place"

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, layer: int, place: str):
        freeze(model)
        shape = adapter.shape(model)
        self.model, self.adapter, self.layer, self.place = model, adapter, layer, place
        self.module = adapter.place_module(model, layer, place)  # raises CompileError listing places
        self.n_layers, self.d_model = shape.n_layers, shape.d_model
        dev = next(model.parameters()).device
        self.vector = nn.Parameter(torch.zeros(shape.d_model, dtype=torch.float32, device=dev))

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """`place.<layer>.<place>` -> the one vector."""
        return {f"place.{self.layer}.{self.place}": self.vector}

    def block_of(self, name: str) -> int | None:
        """The block whose submodule the vector follows."""
        return self.layer

    def attach(self, scope: HookScope) -> None:
        """Add the vector to the chosen submodule's output through a forward hook."""
        scope.forward_hook(self.module, add_hook(self.vector))

    def to_vector_set(self, **meta: object) -> VectorSet:
        """Row `layer` holds the vector; metadata `place` says where it belongs (not after the block)."""
        out = torch.zeros(self.n_layers, self.d_model)
        out[self.layer] = self.vector.detach().cpu()
        return VectorSet(out, [self.layer], {"place": self.place, **{k: str(v) for k, v in meta.items()}})

    def describe(self) -> str:
        """`at_place <layer>.<place>`."""
        return f"at_place {self.layer}.{self.place}"


class Lora1(Parameterisation):
    """Rank-1 LoRA on `mlp.down_proj`: out += B (A x) with A [1, d_ff], B [d_model, 1], alpha = r = 1.

    `A x` is the per-token magnitude and B the direction, which is why the paper uses it for adaptive,
    token-wise steering."""

    kind = "lora1"

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, layers: list[int], seed: int = 0):
        freeze(model)
        self.model, self.adapter, self.layers = model, adapter, sorted(layers)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.A: dict[int, nn.Parameter] = {}
        self.B: dict[int, nn.Parameter] = {}
        for i in self.layers:
            down = adapter.down_proj(model, i)
            a = torch.empty(1, down.in_features, dtype=torch.float32)
            # PEFT's default: kaiming_uniform_(a=sqrt(5)) on A, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1.0 / math.sqrt(down.in_features)
            a.uniform_(-bound, bound, generator=gen)
            self.A[i] = nn.Parameter(a.to(down.weight.device))
            self.B[i] = nn.Parameter(torch.zeros(down.out_features, 1, dtype=torch.float32, device=down.weight.device))

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """`lora_A.<i>` and `lora_B.<i>` of each adapted block (PEFT's names)."""
        out: dict[str, nn.Parameter] = {}
        for i in self.layers:
            out[f"lora_A.{i}"] = self.A[i]
            out[f"lora_B.{i}"] = self.B[i]
        return out

    def block_of(self, name: str) -> int | None:
        """The block index in a `lora_A.<i>` / `lora_B.<i>` name."""
        return int(name.split(".")[1])

    def attach(self, scope: HookScope) -> None:
        """Add the rank-1 update B (A x) to each adapted block's down_proj output through a forward hook."""
        for i in self.layers:
            scope.forward_hook(self.adapter.down_proj(self.model, i), lora_hook(self.A[i][0], self.B[i][:, 0]))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The `lora1` intervention's file layout: A [n_layers, d_ff], B [n_layers, d_model], layers [k]
        (absent rows are zero); with its `scale: 1` it reproduces this adapter."""
        shape = self.adapter.shape(self.model)
        d_ff = self.A[self.layers[0]].shape[1]
        a = torch.zeros(shape.n_layers, d_ff)
        b = torch.zeros(shape.n_layers, shape.d_model)
        for i in self.layers:
            a[i] = self.A[i].detach().cpu()[0]
            b[i] = self.B[i].detach().cpu()[:, 0]
        return {"A": a, "B": b, "layers": torch.tensor(self.layers, dtype=torch.int64)}

    def describe(self) -> str:
        """`lora1 i,j,...` (the adapted blocks)."""
        return "lora1 " + ",".join(map(str, self.layers))


class FullModel(Parameterisation):
    """Every model weight trainable (the full fine-tuning baseline); no hooks."""

    kind = "full"

    def __init__(self, model: nn.Module):
        self.model = model
        for p in model.parameters():
            p.requires_grad_(True)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """Every weight of the model, by its module path."""
        return dict(self.model.named_parameters())

    def detach(self) -> None:
        """Freeze the weights again, so the model is left as the trainer found it."""
        freeze(self.model)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every weight on the CPU, contiguous: what a checkpoint's state file stores for full fine-tuning."""
        return {k: v.detach().cpu().contiguous() for k, v in self.named_trainable().items()}


def build_parameterisation(resolved, model: nn.Module, adapter: ArchitectureAdapter, seed: int = 0) -> Parameterisation:
    """A parameterisation from a `spec.training.ResolvedSetup`."""
    if resolved.kind == "vectors":
        return BlockVectors(model, adapter, list(resolved.layers))
    if resolved.kind == "at_place":
        return PlaceVector(model, adapter, resolved.layers[0], resolved.place)
    if resolved.kind == "lora1":
        return Lora1(model, adapter, list(resolved.layers), seed=seed)
    if resolved.kind == "full":
        return FullModel(model)
    raise ValueError(f"unknown setup kind {resolved.kind!r}")  # pragma: no cover
