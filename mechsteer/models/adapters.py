"""Architecture adapters: explicit tables mapping abstract sites to module paths per model family.

Sites (`_PRE_NORM_SITES` below; a family may override some): resid_pre, resid_post, ln1, attn.q, attn.k,
attn.v, attn.pre_o, attn.out, ln2, mlp.in, mlp.out, mlp.down_in, final_norm, unembed. Each maps to (module
path with `{layer}`, which side of the module: "input" = a forward pre-hook sees it, "output" = a forward hook
sees it). Structural paths (the decoder stack `base`, its block list `blocks`, each block's MLP output
projection `down_proj`) and the block `layout` come from the same table, so everything an intervention or
readout finds inside a model is one table look-up. Layer names are never guessed with regexes: an unknown
architecture or site is an error listing what exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mechsteer.errors import CompileError, ModelLoadError
from mechsteer.registry import Registry
from mechsteer.spec.models import ModelShape

Side = Literal["input", "output"]


@dataclass(frozen=True)
class Site:
    """Where an abstract site lives in a model: a module path (with `{layer}`) and which side of that module holds
    the activation."""

    path: str
    side: Side


_PRE_NORM_SITES: dict[str, Site] = {
    "resid_pre": Site("model.layers.{layer}", "input"),
    "resid_post": Site("model.layers.{layer}", "output"),
    "ln1": Site("model.layers.{layer}.input_layernorm", "output"),
    "attn.q": Site("model.layers.{layer}.self_attn.q_proj", "output"),
    "attn.k": Site("model.layers.{layer}.self_attn.k_proj", "output"),
    "attn.v": Site("model.layers.{layer}.self_attn.v_proj", "output"),
    "attn.pre_o": Site("model.layers.{layer}.self_attn.o_proj", "input"),
    "attn.out": Site("model.layers.{layer}.self_attn", "output"),
    "ln2": Site("model.layers.{layer}.post_attention_layernorm", "output"),
    "mlp.in": Site("model.layers.{layer}.mlp", "input"),
    "mlp.out": Site("model.layers.{layer}.mlp", "output"),
    "mlp.down_in": Site("model.layers.{layer}.mlp.down_proj", "input"),
    "final_norm": Site("model.norm", "output"),
    "unembed": Site("lm_head", "output"),
}


Layout = Literal["pre_norm", "sandwich"]
"""`pre_norm` (Llama, Qwen2): h + Attn(LN1 h), then + MLP(LN2 .), so a vector added after the MLP equals a
down_proj bias. `sandwich` (Gemma3): extra norms after attention (post_attention_layernorm) and after the MLP
(post_feedforward_layernorm), so `add` after the block is NOT a down_proj bias, and block surgery normalises
the attention output it routes to the MLP input (`paths["attn_out_norm"]`). The same names, torch-free, with
what each means for an intervention: `mechsteer.spec.layouts`."""

_PRE_NORM_PATHS = {"base": "model", "blocks": "model.layers", "down_proj": "mlp.down_proj"}
"""Structural paths: the decoder stack, its block list, and the MLP output projection inside a block; a
sandwich-norm block adds `attn_out_norm`, the norm between its attention output and the residual add."""


@dataclass(frozen=True)
class ArchitectureAdapter:
    """How to find things inside one model family (all of it from its tables)."""

    name: str
    architectures: tuple[str, ...]
    sites: dict[str, Site] = field(default_factory=lambda: dict(_PRE_NORM_SITES))
    places: dict[str, str] = field(default_factory=dict)
    """`add_at_place` names -> submodule path relative to the block (paper Appendix C)."""
    paths: dict[str, str] = field(default_factory=lambda: dict(_PRE_NORM_PATHS))
    layout: Layout = "pre_norm"

    @property
    def supports_surgery(self) -> bool:
        """Whether block surgery (Skip-Attn, Q/K/V and head splicing) knows this block layout: both layouts
        (a sandwich block names its attention-output norm, `paths["attn_out_norm"]`)."""
        return self.layout == "pre_norm" or "attn_out_norm" in self.paths

    def attn_out_norm(self, model: nn.Module, layer: int) -> nn.Module | None:
        """The norm block `layer` applies to its attention output before the residual add (Gemma3's
        post_attention_layernorm), or None where the output is added as it is (pre-norm blocks)."""
        path = self.paths.get("attn_out_norm")
        return self.layer(model, layer).get_submodule(path) if path else None

    # -- structure
    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The model's list of decoder blocks."""
        return model.get_submodule(self.paths["blocks"])

    def layer(self, model: nn.Module, i: int) -> nn.Module:
        """Decoder block `i`."""
        return self.layers(model)[i]

    def base_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack (receives input_ids/attention_mask/past_key_values before any layer runs)."""
        return model.get_submodule(self.paths["base"])

    def shape(self, model: nn.Module) -> ModelShape:
        """Depth, width, head counts and architecture name from the model's config."""
        cfg = model.config
        n_heads = cfg.num_attention_heads
        return ModelShape(
            n_layers=cfg.num_hidden_layers,
            d_model=cfg.hidden_size,
            n_heads=n_heads,
            n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
            architecture=type(model).__name__,
        )

    def head_dim(self, model: nn.Module) -> int:
        """Width of one attention head (the config's `head_dim`, else d_model / heads)."""
        cfg = model.config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    # -- sites
    def site(self, name: str) -> Site:
        """The named site; an unknown name is a CompileError listing the sites this architecture has."""
        if name not in self.sites:
            raise CompileError(
                f"architecture {self.name!r} has no site {name!r}; sites: {', '.join(sorted(self.sites))}"
            )
        return self.sites[name]

    def module_at(self, model: nn.Module, site: str, layer: int | None = None) -> tuple[nn.Module, Side]:
        """The module holding `site` in block `layer` and which side of it to hook; a path missing from the model is
        a CompileError."""
        s = self.site(site)
        path = s.path.format(layer=layer)
        try:
            return model.get_submodule(path), s.side
        except AttributeError:
            raise CompileError(f"site {site!r} -> module {path!r} does not exist in {type(model).__name__}") from None

    def place_module(self, model: nn.Module, layer: int, place: str) -> nn.Module:
        """The submodule of block `layer` called `place` (where `add_at_place` adds); an unknown place is a
        CompileError listing them."""
        if place not in self.places:
            raise CompileError(
                f"architecture {self.name!r} has no place {place!r}; places: {', '.join(sorted(self.places))}"
            )
        return self.layer(model, layer).get_submodule(self.places[place])

    def down_proj(self, model: nn.Module, layer: int, what: str = "this intervention") -> nn.Linear:
        """Block `layer`'s MLP output projection (where the paper's bias and lora1 live); `what` names the
        caller in the error for models without one."""
        try:
            return self.layer(model, layer).get_submodule(self.paths["down_proj"])
        except AttributeError:
            raise CompileError(
                f"{what} needs {self.paths['down_proj']}, which {type(model).__name__} does not have (block {layer})"
            ) from None


_LLAMA_PLACES = {
    "input_layernorm": "input_layernorm",
    "self_attn": "self_attn",
    "post_attention_layernorm": "post_attention_layernorm",
    "mlp": "mlp",
}

ADAPTERS: Registry[ArchitectureAdapter] = Registry("architecture")
for _a in (
    ArchitectureAdapter("llama", ("LlamaForCausalLM",), places=_LLAMA_PLACES),
    ArchitectureAdapter("qwen2", ("Qwen2ForCausalLM",), places=_LLAMA_PLACES),
    ArchitectureAdapter(
        "gemma3",
        ("Gemma3ForCausalLM",),
        sites={**_PRE_NORM_SITES, "ln2": Site("model.layers.{layer}.pre_feedforward_layernorm", "output")},
        places={
            **_LLAMA_PLACES,
            "post_attention_layernorm": "post_attention_layernorm",
            "pre_feedforward_layernorm": "pre_feedforward_layernorm",
        },
        paths={**_PRE_NORM_PATHS, "attn_out_norm": "post_attention_layernorm"},
        layout="sandwich",
    ),
):
    for _arch in _a.architectures:
        ADAPTERS.register(_arch, _a)


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded model, by its class name (config.architectures may be absent on models
    built from a config)."""
    arch = type(model).__name__
    if arch not in ADAPTERS:
        raise ModelLoadError(
            f"unsupported architecture {arch!r}; supported: {', '.join(ADAPTERS.names())}",
            hint="add an ArchitectureAdapter in mechsteer/models/adapters.py",
        )
    return ADAPTERS.get(arch)


def decoder_output_tensor(out) -> torch.Tensor:
    """A decoder layer returns a tensor in transformers 5.x and a tuple in 4.x: return the hidden states."""
    return out[0] if isinstance(out, tuple) else out


def replace_decoder_output(out, hidden: torch.Tensor):
    """A decoder block's output with its hidden states replaced (blocks return a tensor or a tuple, depending on the
    architecture and version)."""
    return (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden
