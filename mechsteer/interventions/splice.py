"""The block-splicing mechanism behind Skip-Attn, Skip-Layer, Q/K/V and per-head surgery (paper section 4.6).

A `SplicePlan` says, for one decoder block B and a vector s, which parts of the block take their value from
the VANILLA copy (input h, the stream without s) instead of the STEERED copy (input h + s). A `BlockSplicer`
carries out a plan with hooks only (all registered through the condition's HookScope):

* pre-hook on block B: remember h, feed the block h + s (the steered residual, which the paper keeps in every
  variant except Skip-Layer), and run the side attention passes the plan needs (below);
* forward hooks on q_proj / k_proj / v_proj: heads marked vanilla get the projection of LN1(h) instead of
  LN1(h + s). Each position's K/V depend only on that position, so the spliced K/V that land in the model's
  KV cache are exactly what an uncached run recomputes: no extra cache is needed for Q/K/V splicing;
* pre-hook on o_proj: heads marked vanilla get their pre-o_proj output from a full vanilla attention pass.
  That pass attends over vanilla keys/values of earlier positions, so it keeps its own KV cache
  (`SideCaches`, reset whenever the model's cache starts empty, i.e. at every generate call);
* patch paths: `all` (default) lets the spliced attention output reach the residual and the MLP input.
  `residual` / `mlp` need the fully steered attention output a_s as well (from o_proj of the unspliced
  pre-o output, or from a side pass on h + s with its own cache when Q/K/V are spliced); a forward hook on
  self_attn and a pre-hook on the MLP's input norm (LN2) then give the residual and the MLP input different
  attention outputs: out = (h+s + N(a_res)) + MLP(LN2(h+s + N(a_mlp))), where N is the identity on pre-norm
  blocks and the attention-output norm on sandwich-norm blocks (Gemma3's post_attention_layernorm, which
  the block itself applies to the residual path);
* Skip-Layer: no splicing inside; a forward hook adds s to the block's output.

Side passes call the block's own submodules (input_layernorm, self_attn, projections) while a flag makes this
splicer's own hooks pass through, so other interventions' hooks on those modules still apply and nothing
recurses. State lives on the splicer instance (one per intervention and condition), never on a class.
Supported blocks: the pre-norm Llama/Qwen2 layout (residual + attention, then LN2 on the sum) and the
sandwich-norm Gemma3 layout (residual + post_attention_layernorm(attention), then pre_feedforward_layernorm on
the sum; `tests/unit/test_circuit_surgery.py` checks both against by-hand blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mechsteer.errors import CompileError
from mechsteer.interventions.side_cache import SideCaches
from mechsteer.models.adapters import decoder_output_tensor, replace_decoder_output

PROJS = ("q", "k", "v")


@dataclass(frozen=True)
class SplicePlan:
    """Which parts of block `layer` come from the vanilla copy.

    `vanilla` maps "q" | "k" | "v" (per-projection heads: query heads for q, KV heads for k/v) and "o"
    (query heads' pre-o_proj outputs) to a bool tensor over heads, True = vanilla. Missing keys (or all-False
    masks) mean fully steered."""

    layer: int
    vanilla: dict[str, torch.Tensor] = field(default_factory=dict)
    patch_path: str = "all"
    skip_layer: bool = False

    def active(self) -> dict[str, torch.Tensor]:
        """The masks that take anything from the vanilla copy (all-False masks dropped)."""
        return {k: m for k, m in self.vanilla.items() if bool(m.any())}


class BlockSplicer:
    """Carries out one SplicePlan on one model with the vector `s` (see module docstring)."""

    def __init__(self, plan: SplicePlan, s: torch.Tensor, ctx):
        ad, model, b = ctx.adapter, ctx.model, plan.layer
        if not ad.supports_surgery:
            raise CompileError(
                f"block surgery supports pre-norm (Llama, Qwen2) and sandwich-norm (Gemma3) blocks; this model "
                f"uses the {ad.name!r} adapter with the {ad.layout!r} layout and no attention-output norm path"
            )
        self.plan = plan
        self.s = s.to(ctx.device, ctx.dtype)
        self.block = ad.layer(model, b)
        self.ln1 = ad.module_at(model, "ln1", b)[0]
        self.ln2 = ad.module_at(model, "ln2", b)[0]
        self.attn = ad.module_at(model, "attn.out", b)[0]
        self.attn_norm = ad.attn_out_norm(model, b)  # None on pre-norm blocks
        self.o_proj = ad.module_at(model, "attn.pre_o", b)[0]
        self.proj = {p: ad.module_at(model, f"attn.{p}", b)[0] for p in PROJS}
        hd = ad.head_dim(model)
        self.masks = {k: m.to(ctx.device).repeat_interleave(hd) for k, m in plan.active().items()}
        self.qkv = [p for p in PROJS if p in self.masks]
        self.patching = plan.patch_path != "all" and bool(self.masks)
        self.caches = SideCaches(model.config, b)
        ctx.keeps_rows(self.caches)  # a generation that drops ended rows drops them here too
        self._side: str | None = None  # set while a side computation runs: this splicer's hooks pass through
        self._reset()

    def _reset(self) -> None:
        self._h = self._h_res = self._ln1_van = self._pre_o_van = self._a_ref = self._a_mlp = None

    # ------------------------------------------------------------------ registration
    def attach(self, scope) -> None:
        """Register the hooks that run the block's vanilla copy beside the steered one and splice the planned parts
        in."""
        if self.plan.skip_layer:
            scope.forward_hook(self.block, self._add_after)
            return
        scope.pre_hook(self.block, self._block_pre, with_kwargs=True)
        scope.forward_hook(self.block, self._block_post)
        for p in self.qkv:
            scope.forward_hook(self.proj[p], self._proj_hook(p))
        if "o" in self.masks:
            scope.pre_hook(self.o_proj, self._o_pre)
        if self.patching:
            scope.forward_hook(self.attn, self._attn_post)
            scope.pre_hook(self.ln2, self._ln2_pre)

    # ------------------------------------------------------------------ side computations
    def _run_side(self, role: str, fn):
        self._side = role
        try:
            return fn()
        finally:
            self._side = None

    def _side_attention(self, role: str, h: torch.Tensor, kwargs: dict, cache_key: str | None):
        """The block's attention on input `h` with this role's own cache (o_proj pre-hook records pre-o)."""
        kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if cache_key is not None:
            kw[cache_key] = self.caches.get(role)

        def run():
            return decoder_output_tensor(self.attn(hidden_states=self.ln1(h), **kw))

        return self._run_side(role, run)

    # ------------------------------------------------------------------ hooks
    def _add_after(self, module, args, output):
        h = decoder_output_tensor(output)
        return replace_decoder_output(output, h + self.s.to(h.dtype))

    def _block_pre(self, module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self._reset()
        self._h = h
        self._h_res = h + self.s.to(h.dtype)
        cache_key = next((k for k in ("cache", "past_key_values") if k in kwargs), None)
        self.caches.sync(kwargs.get(cache_key) if cache_key else None)
        if self.qkv:
            self._ln1_van = self._run_side("ln1", lambda: self.ln1(h))
        if "o" in self.masks:
            self._side_attention("vanilla", h, kwargs, cache_key)
        if self.patching and self.qkv:
            self._a_ref = self._side_attention("steered", self._h_res, kwargs, cache_key)
        if args:
            return (self._h_res,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self._h_res}

    def _block_post(self, module, args, output):
        self._reset()  # free the per-call tensors

    def _proj_hook(self, p: str):
        mask = self.masks[p]

        def hook(module, args, output):
            if self._side is not None:
                return None
            van = self._run_side("proj", lambda: module(self._ln1_van))
            return torch.where(mask, van, output)

        return hook

    def _o_pre(self, module, args):
        x = args[0]
        if self._side == "vanilla":
            self._pre_o_van = x
            return None
        if self._side is not None:
            return None
        if self.patching and not self.qkv:
            self._a_ref = self._run_side("o_ref", lambda: module(x))
        return (torch.where(self.masks["o"], self._pre_o_van, x),) + tuple(args[1:])

    def _attn_post(self, module, args, output):
        if self._side is not None:
            return None
        a_spliced = decoder_output_tensor(output)
        if self.plan.patch_path == "residual":
            self._a_mlp = self._a_ref
            return None
        self._a_mlp = a_spliced  # patch_path == "mlp": the residual gets the fully steered attention
        return replace_decoder_output(output, self._a_ref)

    def _ln2_pre(self, module, args):
        if self._side is not None or self._a_mlp is None:
            return None
        a = self._a_mlp
        if self.attn_norm is not None:  # sandwich blocks normalise the attention output before the residual add
            a = self._run_side("attn_norm", lambda: self.attn_norm(a))
        return (self._h_res + a,) + tuple(args[1:])
