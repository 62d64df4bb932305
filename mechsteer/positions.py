"""Token-position bookkeeping for position-selective interventions, correct with a KV cache and padding.

A pre-hook on the decoder stack sees every forward call's `attention_mask` (2-D, covering cache + new
tokens) and the number of new tokens T. From it, the tracker derives, for the current chunk, each token's
index within its own sequence (padding excluded) and whether it is a pad. The prompt length of each row is
fixed when a sequence begins (`begin()`), so generated positions are counted across decode steps whether
the model runs with a cache (chunks of 1) or without (the whole sequence again each step).
"""

from __future__ import annotations

import torch

from mechsteer.hooks import HookScope


class PositionTracker:
    """Knows, during a forward pass, which token positions of the current chunk are prompt or generated.

    Call `begin()` before each `generate` (the next forward is the prompt) or `begin(lengths)` before a
    teacher-forced forward. Without `begin()`, a forward with an empty KV cache starts new sequences, which is
    right for cached generation only; the engine and the lm-eval bridge always call `begin()`."""

    def __init__(self) -> None:
        self.prompt_len: torch.Tensor | None = None  # (b,) non-pad prompt tokens per row
        self.index: torch.Tensor | None = None  # (b, T) position within the sequence, pads = -1
        self._explicit: torch.Tensor | None = None
        self._await_prompt = False
        self._managed = False
        self._masks: dict = {}  # per-forward cache: every hooked layer of a step asks for the same mask

    def begin(self, prompt_lengths: torch.Tensor | list[int] | None = None) -> None:
        """Start new sequences (see class docstring)."""
        self._managed = True
        self.prompt_len = None
        self._explicit = None if prompt_lengths is None else torch.as_tensor(prompt_lengths).long()
        self._await_prompt = prompt_lengths is None

    def select_rows(self, indices: torch.Tensor) -> None:
        """Keep only these rows (a generation dropped its ended rows); positions are recomputed from the
        next forward's mask, the prompt lengths are per row."""
        if self.prompt_len is not None:
            self.prompt_len = self.prompt_len[indices.to(self.prompt_len.device)]
        self._masks = {}

    def attach(self, scope: HookScope, base_model: torch.nn.Module) -> None:
        """Hook the decoder stack so every forward updates which positions are prompt and which generated."""
        scope.pre_hook(base_model, self._pre_hook, with_kwargs=True)

    def _pre_hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        ref = ids if ids is not None else kwargs["inputs_embeds"]
        b, t = ref.shape[0], ref.shape[1]
        # transformers 5.x names the cache kwarg `cache`; 4.x `past_key_values`.
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        past_len = past.get_seq_length() if past is not None and hasattr(past, "get_seq_length") else 0
        mask = kwargs.get("attention_mask")
        pos_ids = kwargs.get("position_ids")
        if mask is not None and mask.dim() == 2:
            m = mask.long()
            idx = (m.cumsum(dim=1) - 1)[:, -t:]
            idx = torch.where(m[:, -t:].bool(), idx, torch.full_like(idx, -1))
        elif pos_ids is not None:
            # generate drops an all-ones mask; position ids then count tokens (no padding to exclude).
            idx = pos_ids.expand(b, t)
        else:
            idx = (torch.arange(t, device=ref.device) + past_len).unsqueeze(0).expand(b, t)
        self.index = idx
        self._masks = {}
        if self._explicit is not None:
            self.prompt_len, self._explicit = self._explicit.to(idx.device), None
        elif self._await_prompt or (not self._managed and past_len == 0):
            # This chunk is the prompt: its non-pad length per row.
            self.prompt_len = idx.max(dim=1).values + 1
            self._await_prompt = False
        return None

    def mask(self, selector, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The selector's mask for the current chunk (see `_compute_mask`), cast to `dtype` when given;
        computed once per forward call and shared by every layer that asks."""
        key = (str(selector), device, dtype)
        if key not in self._masks:
            m = self._compute_mask(selector, device)
            self._masks[key] = m if dtype is None else m.to(dtype)
        return self._masks[key]

    def _compute_mask(self, selector, device: torch.device) -> torch.Tensor:
        """A (b, T, 1) boolean mask of the current chunk's positions chosen by `selector`:
        "all", "prompt", "generated", "last_prompt", or an int k = the first k generated tokens."""
        if self.index is None or self.prompt_len is None:
            raise RuntimeError("position tracker saw no forward call; this is a mechsteer bug")
        idx = self.index.to(device)
        plen = self.prompt_len.to(device).unsqueeze(1)
        valid = idx >= 0
        if selector == "prompt":
            sel = valid & (idx < plen)
        elif selector == "generated":
            sel = valid & (idx >= plen)
        elif selector == "last_prompt":
            sel = valid & (idx == plen - 1)
        elif isinstance(selector, int):
            sel = valid & (idx >= plen) & (idx < plen + selector)
        else:
            sel = valid
        return sel.unsqueeze(-1)
