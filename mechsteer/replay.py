"""Teacher-forced replay: re-run only the blocks a condition can change.

A comparison of conditions on the same teacher-forced sequences spends most of its time recomputing blocks
that no condition touches. If every intervention of a condition acts on blocks >= l, then the residual
stream entering block l, and everything the decoder stack hands to block l (attention mask, position ids,
RoPE cos/sin, ...), are the same as in the unsteered pass. So:

1. during one base pass, `ReplayRecorder` (a forward pre-hook with kwargs on block l) keeps block l's input
   hidden state and keyword arguments (without any KV cache);
2. under any condition that touches only blocks >= l (its hooks open, e.g. inside
   `mechsteer.interventions.steering`), `replay()` calls blocks l..L-1 directly with those kwargs, then the
   final norm and the unembedding. The condition's hooks fire as in a full forward, because the same block
   modules are called.

The result equals a full forward under that condition (tested to 1e-5 in float32 for add, skip_attn and a
per-head splice on Llama and Qwen2, left and right padding). `earliest_block()` tells which l is safe for a
condition, from each intervention kind's own answer (`first_block` of its spec class); kinds that change the
prompt, or that need the decoder stack's own pre-hook (position selectors other than `all`), are not
replayable and raise `NotReplayable`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from mechsteer.errors import NotReplayable
from mechsteer.hooks import HookScope
from mechsteer.models.adapters import ArchitectureAdapter, decoder_output_tensor

_CACHE_KEYS = ("cache", "past_key_values")


# NotReplayable lives in mechsteer.errors (so a torch-free kind can raise it) and is part of this module's API.
__all__ = ["NotReplayable", "ReplayRecorder", "ReplayState", "earliest_block", "record", "replay", "unembed"]


@dataclass
class ReplayState:
    """What block `layer` received during a recorded pass."""

    layer: int
    hidden: torch.Tensor
    """[batch, T, d] residual stream at the input of block `layer`."""
    kwargs: dict
    """Keyword arguments the decoder stack passed to the block (cache removed, use_cache False)."""


class ReplayRecorder:
    """Pre-hooks (with kwargs) on blocks `layers` that keep their inputs of the latest forward call.

    Attach it in a scope of its own during the base pass, or BEFORE the condition's hooks: pre-hooks run in
    registration order, and the recorded input must be the one the stack produced."""

    def __init__(self, model: nn.Module, adapter: ArchitectureAdapter, layers: Iterable[int]):
        self.model, self.adapter = model, adapter
        self.layers = sorted({int(i) for i in layers})
        self.states: dict[int, ReplayState] = {}

    def _hook(self, layer: int):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            for key in _CACHE_KEYS:
                if key in kw:
                    kw[key] = None
            if "use_cache" in kw:
                kw["use_cache"] = False
            self.states[layer] = ReplayState(layer, h.detach().clone(), kw)

        return hook

    def attach(self, scope: HookScope) -> ReplayRecorder:
        """Register the pre-hooks in `scope` (removed with it); returns self."""
        n = self.adapter.shape(self.model).n_layers
        for i in self.layers:
            if not 0 <= i < n:
                raise ValueError(f"replay layer {i} outside 0..{n - 1}")
            scope.pre_hook(self.adapter.layer(self.model, i), self._hook(i), with_kwargs=True)
        return self


@torch.no_grad()
def record(model: nn.Module, adapter: ArchitectureAdapter, layers: Iterable[int], **inputs):
    """One uncached forward (`inputs`: input_ids, attention_mask, ...) recording block inputs.
    Returns (logits, {layer: ReplayState}). Hooks already on the model (a condition) apply."""
    rec = ReplayRecorder(model, adapter, layers)
    with HookScope("replay.record") as scope:
        rec.attach(scope)
        out = model(**inputs, use_cache=False)
    return out.logits, rec.states


def unembed(model: nn.Module, adapter: ArchitectureAdapter, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm, lm_head and (Gemma) final logit soft-capping, as the model's own forward applies them."""
    h = adapter.module_at(model, "final_norm")[0](hidden)
    logits = adapter.module_at(model, "unembed")[0](h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def replay(
    model: nn.Module,
    adapter: ArchitectureAdapter,
    state: ReplayState,
    *,
    resid: bool = False,
    logits: bool = True,
    keep_last: int | None = None,
):
    """Re-run blocks state.layer..L-1, then (with `logits`) the final norm and the unembedding, on the
    recorded input, under whatever hooks are on the model now. Returns the logits [b, T, V]; with `resid`,
    (logits or None, {j: resid_post of block j}) - persistence needs only the residual streams, so
    `logits=False` skips the unembedding, the largest single cost of a short replay. Only valid when the
    current hooks touch no block before `state.layer` (see `earliest_block`). `keep_last=k` unembeds only the
    last k positions (a teacher-forced readout scores the generated positions only), like transformers'
    `logits_to_keep=k`."""
    n = adapter.shape(model).n_layers
    h = state.hidden
    post: dict[int, torch.Tensor] = {}
    for j in range(state.layer, n):
        h = decoder_output_tensor(adapter.layer(model, j)(h, **state.kwargs))
        if resid:
            post[j] = h
    out = unembed(model, adapter, h if not keep_last else h[:, -keep_last:]) if logits else None
    return (out, post) if resid else out


def earliest_block(interventions: list, n_layers: int, vectors: dict | None = None) -> int:
    """The first decoder block a condition (list of intervention specs) can change; `n_layers` when it
    changes none (the unsteered condition). Replay from this block reproduces a full forward.

    Each intervention kind answers for itself (`InterventionBase.first_block`); `vectors` (name ->
    VectorSet, optional) resolves `layer: all` and `transfer` to the rows present; without it those count as
    starting at block 0 (always correct, just slower). Raises NotReplayable, with the kind's reason, for a
    kind whose effect replay cannot reproduce (e.g. `prefix_token` changes the prompt)."""
    firsts = [spec.first_block(n_layers, vectors) for spec in interventions]
    return min((f for f in firsts if f is not None), default=n_layers)
