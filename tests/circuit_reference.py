"""Hook-free reference computations for the circuit-intervention tests.

A decoder run written out by hand (embedding, RoPE, GQA attention with an explicit causal softmax, pre-norm
blocks) from the model's weights, so that each intervention's hooks are compared with arithmetic that shares
nothing with them but the weights and the small leaf modules (norms, linears, MLP). Unpadded batches only.
Per-head edits are done by explicit slicing of head ranges, following the paper's table, not the code under
test. `GemmaReference` does the same for Gemma3's sandwich-norm blocks; `reference_for` picks the class.
"""

from __future__ import annotations

import torch

from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [b, H, T, hd]; cos/sin [b, T, hd] (Llama's rotate-half convention)."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rot * sin[:, None]


def splice_heads(base: torch.Tensor, other: torch.Tensor, heads, hd: int) -> torch.Tensor:
    """`base` with the feature slices of `heads` taken from `other` ([b, T, H*hd])."""
    out = base.clone()
    for h in heads:
        out[..., h * hd : (h + 1) * hd] = other[..., h * hd : (h + 1) * hd]
    return out


class Reference:
    """model + unpadded ids -> by-hand forward passes with per-block edits."""

    def __init__(self, model, ids: torch.Tensor):
        cfg = model.config
        self.model, self.ids = model, ids
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = cfg.hidden_size // cfg.num_attention_heads
        self.layers = model.model.layers
        b, t = ids.shape
        self.h0 = model.model.embed_tokens(ids)
        pos = torch.arange(t).unsqueeze(0).expand(b, t)
        self.cos, self.sin = model.model.rotary_emb(self.h0, pos)
        self.causal = torch.full((t, t), float("-inf")).triu(1)

    # -- pieces of block i
    def qkv(self, i: int, h: torch.Tensor):
        at = self.layers[i].self_attn
        x = self.layers[i].input_layernorm(h)
        return at.q_proj(x), at.k_proj(x), at.v_proj(x)

    def qkv_from_ln(self, i: int, x: torch.Tensor):
        at = self.layers[i].self_attn
        return at.q_proj(x), at.k_proj(x), at.v_proj(x)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: int | None = None) -> torch.Tensor:
        """Projections (before RoPE) of block `i` -> pre-o_proj output [b, T, H*hd]; KV head g serves query
        heads g*rep .. g*rep+rep-1."""
        b, t, _ = q.shape
        q = rope(self.q_heads(i, q.view(b, t, self.n_heads, self.hd)).transpose(1, 2), *self.rope_of(i))
        k = rope(self.k_heads(i, k.view(b, t, self.n_kv, self.hd)).transpose(1, 2), *self.rope_of(i))
        v = v.view(b, t, self.n_kv, self.hd).transpose(1, 2)
        rep = self.n_heads // self.n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) * self.scaling + self.mask_of(i)
        out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
        return out.transpose(1, 2).reshape(b, t, self.n_heads * self.hd)

    # -- what differs between families (the pre-norm Llama/Qwen2 answers here)
    @property
    def scaling(self) -> float:
        return self.hd**-0.5

    def q_heads(self, i, q):
        return q

    def k_heads(self, i, k):
        return k

    def rope_of(self, i):
        return self.cos, self.sin

    def mask_of(self, i):
        return self.causal

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.model.norm(h))

    def o(self, i: int, pre_o: torch.Tensor) -> torch.Tensor:
        return self.layers[i].self_attn.o_proj(pre_o)

    def mlp(self, i: int, r: torch.Tensor) -> torch.Tensor:
        return self.layers[i].mlp(self.layers[i].post_attention_layernorm(r))

    def block(self, i: int, h: torch.Tensor) -> torch.Tensor:
        r = h + self.o(i, self.attend(*self.qkv(i, h), i))
        return r + self.mlp(i, r)

    # -- whole runs
    def run(self, edits: dict | None = None) -> torch.Tensor:
        """Logits; `edits[i](ref, i, h)` replaces block i's computation (h = its input)."""
        edits = edits or {}
        h = self.h0
        for i in range(len(self.layers)):
            h = edits[i](self, i, h) if i in edits else self.block(i, h)
        return self.logits(h)

    def add_after(self, vectors: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits with vectors[i] added to block i's output."""
        return self.run({i: (lambda r, j, h, v=v: r.block(j, h) + v) for i, v in vectors.items()})


class GemmaReference(Reference):
    """Gemma3 by hand: the embedding scaled by sqrt(d) (its embedding module), q_norm / k_norm per head
    before RoPE, RoPE per layer type (local / global bases), scores scaled by query_pre_attn_scalar^-1/2, a
    sliding-window mask on sliding layers, and sandwich blocks: the attention and MLP outputs normalised
    (post_attention_layernorm, post_feedforward_layernorm) before each residual add, the MLP input by
    pre_feedforward_layernorm. `o` and `mlp` include those norms, so `surgery_block`'s two-copy formula
    reads the same for both families."""

    def __init__(self, model, ids: torch.Tensor):
        cfg = model.config
        self.model, self.ids = model, ids
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.layers = model.model.layers
        b, t = ids.shape
        self.h0 = model.model.embed_tokens(ids)
        self.causal = torch.full((t, t), float("-inf")).triu(1)
        pos = torch.arange(t).unsqueeze(0).expand(b, t)
        self.types = list(cfg.layer_types)
        self.ropes = {lt: model.model.rotary_emb(self.h0, pos, lt) for lt in set(self.types)}
        q_pos, k_pos = torch.arange(t)[:, None], torch.arange(t)[None, :]
        outside = (k_pos <= q_pos - cfg.sliding_window) if cfg.sliding_window else torch.zeros(t, t, dtype=bool)
        self.masks = {
            "full_attention": self.causal,
            "sliding_attention": self.causal.masked_fill(outside, float("-inf")),
        }
        self._scaling = cfg.query_pre_attn_scalar**-0.5
        self.cap = cfg.final_logit_softcapping

    @property
    def scaling(self) -> float:
        return self._scaling

    def q_heads(self, i, q):
        return self.layers[i].self_attn.q_norm(q)

    def k_heads(self, i, k):
        return self.layers[i].self_attn.k_norm(k)

    def rope_of(self, i):
        return self.ropes[self.types[i]]

    def mask_of(self, i):
        return self.masks[self.types[i]]

    def o(self, i: int, pre_o: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return layer.post_attention_layernorm(layer.self_attn.o_proj(pre_o))

    def mlp(self, i: int, r: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(r)))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        out = super().logits(h)
        return torch.tanh(out / self.cap) * self.cap if self.cap else out


def reference_for(model, ids: torch.Tensor) -> Reference:
    """The by-hand reference of the model's family."""
    return GemmaReference(model, ids) if type(model).__name__.startswith("Gemma3") else Reference(model, ids)


def surgery_block(
    ref: Reference,
    i: int,
    h: torch.Tensor,
    s: torch.Tensor,
    *,
    van_q=(),
    van_k=(),
    van_v=(),
    van_o=(),
    path: str = "all",
) -> torch.Tensor:
    """The paper's two-copy block: vanilla copy on h, steered copy on h + s; the named heads of Q/K/V/pre-o
    from the vanilla copy; the residual steered; `path` routes the spliced attention (all | residual | mlp)."""
    hs = h + s
    qv, kv, vv = ref.qkv(i, h)
    qs, ks, vs = ref.qkv(i, hs)
    q, k, v = (
        splice_heads(qs, qv, van_q, ref.hd),
        splice_heads(ks, kv, van_k, ref.hd),
        splice_heads(vs, vv, van_v, ref.hd),
    )
    pre = ref.attend(q, k, v, i)
    if van_o:
        pre = splice_heads(pre, ref.attend(qv, kv, vv, i), van_o, ref.hd)
    a_spliced = ref.o(i, pre)
    a_steered = ref.o(i, ref.attend(qs, ks, vs, i))
    a_res, a_mlp = {"all": (a_spliced, a_spliced), "residual": (a_spliced, a_steered), "mlp": (a_steered, a_spliced)}[
        path
    ]
    return (hs + a_res) + ref.mlp(i, hs + a_mlp)


def steered_logits(model, specs, vectors, ids, **kw) -> torch.Tensor:
    """Logits of one forward under a condition (specs: list of intervention specs)."""
    with torch.no_grad(), steering(model, adapter_for(model), specs, vectors, **kw):
        return model(input_ids=ids).logits
