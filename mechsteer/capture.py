"""Capture of named sites (resid_post, attn.out, mlp.down_in, ...) during forward passes, with streaming
reductions so memory stays bounded.

A `Capture` registers one hook per (site, layer) through a HookScope the caller owns (usually the condition's
scope from `mechsteer.interventions.steering`, or a nested `HookScope`), keeps the tensors of the CURRENT
forward call only, and when the model's outermost forward returns, hands them to a reduction callback and
drops them. So at most one chunk's [batch x T x d] per captured site is alive at any time; the reductions
below (sum/count per layer, last position, per-position float64 statistics) keep O(layers x d) or
O(positions) state across chunks.

`block_outputs` is the one-forward form (the output of chosen blocks on one batch): the readouts, DiffSAE's
collection and the `mean_diff` builder capture through it.

Order matters: hooks run in registration order, so a capture opened AFTER the condition's interventions sees
their effect (resid_post of block l includes a vector added after block l), which is what the paper's
persistence analysis reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mechsteer.hooks import HookScope
from mechsteer.models.adapters import ArchitectureAdapter

SiteKey = tuple[str, int | None]
"""(site name, layer); layer None for layer-less sites (final_norm, unembed)."""

ChunkCallback = Callable[[dict[SiteKey, torch.Tensor]], None]


def _first_tensor(x):
    return x[0] if isinstance(x, (tuple, list)) else x


class Capture:
    """Hooks that collect `sites` during each forward call and pass them to `on_chunk` when the call ends.

    `sites`: (site, layer) pairs, e.g. `[("resid_post", j) for j in range(L)]`. Tensors are detached and
    float32 (model dtype is kept when `keep_dtype`); they are the values the module saw or returned (for
    "input" sites: the first positional input, or `hidden_states`; for tuple outputs: the first element).
    `on_chunk(acts)` is called once per forward call of `outer` (default: the model itself) with
    `acts[(site, layer)] = [batch, T, ...]`; the dict is cleared afterwards. Without a callback, the last chunk stays in `last` (tests, small runs).
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: ArchitectureAdapter,
        sites: Iterable[SiteKey],
        on_chunk: ChunkCallback | None = None,
        *,
        keep_dtype: bool = False,
        outer: nn.Module | None = None,
    ):
        self.model, self.adapter = model, adapter
        self.outer = model if outer is None else outer
        self.sites = list(dict.fromkeys((s, layer) for s, layer in sites))
        self.on_chunk = on_chunk
        self.keep_dtype = keep_dtype
        self._acts: dict[SiteKey, torch.Tensor] = {}
        self.last: dict[SiteKey, torch.Tensor] = {}
        self.n_chunks = 0

    def _store(self, key: SiteKey, t: torch.Tensor) -> None:
        t = t.detach()
        self._acts[key] = t if self.keep_dtype else t.float()

    def _in_hook(self, key: SiteKey):
        def hook(module, args, kwargs):
            self._store(key, args[0] if args else kwargs["hidden_states"])

        return hook

    def _out_hook(self, key: SiteKey):
        def hook(module, args, output):
            self._store(key, _first_tensor(output))

        return hook

    def _outer_pre(self, module, args):
        self._acts = {}  # a call that failed midway leaves nothing behind for the next one

    def _outer_post(self, module, args, output):
        acts, self._acts = self._acts, {}
        missing = [k for k in self.sites if k not in acts]
        if missing:
            raise RuntimeError(f"capture: sites {missing} did not run in this forward call")
        self.n_chunks += 1
        if self.on_chunk is None:
            self.last = acts
        else:
            self.on_chunk(acts)

    def attach(self, scope: HookScope) -> Capture:
        """Register the hooks through `scope` (they go when the scope closes)."""
        for site, layer in self.sites:
            module, side = self.adapter.module_at(self.model, site, layer)
            if side == "input":
                scope.pre_hook(module, self._in_hook((site, layer)), with_kwargs=True)
            else:
                scope.forward_hook(module, self._out_hook((site, layer)))
        scope.pre_hook(self.outer, self._outer_pre)
        scope.forward_hook(self.outer, self._outer_post)
        return self


def layer_sites(site: str, layers: Iterable[int]) -> list[SiteKey]:
    """The keys of one site at several layers, for `Capture`."""
    return [(site, int(i)) for i in layers]


@torch.no_grad()
def block_outputs(
    model: nn.Module, adapter: ArchitectureAdapter, layers: Iterable[int], *, keep_dtype: bool = False, **inputs
) -> dict[int, torch.Tensor]:
    """One uncached forward on `inputs` (input_ids, attention_mask, ...) with the output of each block in
    `layers` (resid_post: where `add` puts row l) captured: {layer: [batch, T, d]}, float32 unless
    `keep_dtype`. The capture's hooks are registered after any already on the model, so under a condition
    (its hooks open) block l's output includes block l's steering."""
    layers = sorted({int(i) for i in layers})
    with HookScope("capture.block_outputs") as scope:
        cap = Capture(model, adapter, layer_sites("resid_post", layers), keep_dtype=keep_dtype).attach(scope)
        model(**inputs, use_cache=False)
    return {i: cap.last[("resid_post", i)] for i in layers}


# ---------------------------------------------------------------------------------------------- masks


def token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[b, T] index of each token within its own sequence (pads = -1); works for left and right padding."""
    m = attention_mask.long()
    idx = m.cumsum(dim=1) - 1
    return torch.where(m.bool(), idx, torch.full_like(idx, -1))


def last_position(t: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[b, T, ...] -> [b, ...]: the value at each row's last real token (left or right padding)."""
    t_idx = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = torch.where(attention_mask.bool(), t_idx, torch.full_like(t_idx, -1)).max(dim=1).values
    return t[torch.arange(t.shape[0], device=t.device), last.to(t.device)]


# ---------------------------------------------------------------------------------------------- reductions


class LayerMean:
    """Sum and count of [b, T, d] tensors over real tokens, per key, in float64: the mean per layer
    (e.g. the mean resid_post of every layer over a whole dataset) from O(keys x d) state."""

    def __init__(self):
        self.sum: dict = {}
        self.count: dict = {}

    def update(self, key, t: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the real-token rows (`mask` true) of `t` to key's sum and count."""
        m = mask.to(t.device).bool()
        s = t.double()[m].sum(dim=0)
        self.sum[key] = self.sum[key] + s if key in self.sum else s
        self.count[key] = self.count.get(key, 0) + int(m.sum())

    def mean(self, key) -> torch.Tensor:
        """The mean over every row added under `key` so far (float64)."""
        return self.sum[key] / self.count[key]


class LastPosition:
    """Keeps each sequence's last-token value per key ([n_samples, d] in total, not [n, T, d])."""

    def __init__(self):
        self.rows: dict = {}

    def update(self, key, t: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Keep each sequence's value at its last real token (`attention_mask` tells where, with left or right
        padding)."""
        self.rows.setdefault(key, []).append(last_position(t, attention_mask).cpu())

    def get(self, key) -> torch.Tensor:
        """Every kept row of `key`, stacked in the order added."""
        return torch.cat(self.rows[key], dim=0)


class PositionStats:
    """Per sequence position (0 = first real token), count, mean and std of a per-token scalar, in float64,
    accumulated over chunks (e.g. ||resid_post|| by position, or alpha_t of lora1 by position)."""

    def __init__(self):
        self.n: dict = {}
        self.s: dict = {}
        self.s2: dict = {}

    def update(self, key, values: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """values: [b, T] per-token scalars."""
        idx = token_index(attention_mask).to(values.device)
        ok = idx >= 0
        pos, v = idx[ok], values.double()[ok]
        size = int(pos.max()) + 1 if pos.numel() else 0
        for store, x in ((self.n, torch.ones_like(v)), (self.s, v), (self.s2, v * v)):
            acc = torch.zeros(size, dtype=torch.float64).index_add_(0, pos.cpu(), x.cpu())
            old = store.get(key, torch.zeros(0, dtype=torch.float64))
            if old.numel() < size:
                old = torch.cat([old, torch.zeros(size - old.numel(), dtype=torch.float64)])
            old[:size] += acc
            store[key] = old

    def frame(self, key):
        """DataFrame: position, n, mean, std (population std; NaN where n = 0)."""
        import pandas as pd

        n, s, s2 = self.n[key], self.s[key], self.s2[key]
        mean = s / n
        var = (s2 / n - mean * mean).clamp_min(0)
        return pd.DataFrame(
            {"position": range(n.numel()), "n": n.long().numpy(), "mean": mean.numpy(), "std": var.sqrt().numpy()}
        )
