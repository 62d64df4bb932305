"""KV caches for the extra attention passes of a spliced block, kept in step with the model's own cache.

Block surgery (see `splice`) may run the spliced block's attention a second time, on the vanilla stream or on
the unspliced steered stream. During cached generation such a pass must see ITS OWN past keys and values,
not the model's (which hold the spliced ones), so it gets a separate cache. That cache must start empty
exactly when the model's cache does, i.e. at every new `generate` call or plain forward:

* the model's cache for the spliced layer is empty (`get_seq_length(layer) == 0`) before the block runs
  -> a new sequence begins: drop the side caches;
* otherwise it must be the same cache object as last time, and every side cache must hold exactly as many
  positions as the model's; anything else (a cache cropped, reused across calls, reordered by beam search
  in a way we cannot follow) is reported instead of silently mixing sequences.

Without a model cache (`use_cache=False`, every step recomputes the whole sequence) the side passes run
without a cache too.
"""

from __future__ import annotations

import weakref

from mechsteer.errors import MechsteerError


class SideCaches:
    """Side KV caches (one per role, e.g. "vanilla") for one block of one model."""

    def __init__(self, config, layer: int):
        self._config = config
        self._layer = layer
        self._main: weakref.ref | None = None
        self._caches: dict[str, object] = {}
        self._active = False

    def sync(self, main_cache) -> None:
        """Call before the block runs, with the cache the model passes to it (None when uncached)."""
        if main_cache is None:
            self._active, self._main, self._caches = False, None, {}
            return
        self._active = True
        past = main_cache.get_seq_length(self._layer)
        if past == 0:
            self._caches = {}
            self._main = weakref.ref(main_cache)
            return
        if self._main is None or self._main() is not main_cache:
            raise MechsteerError(
                f"block surgery on layer {self._layer} met a KV cache that already holds {past} positions but "
                "was not filled under this condition",
                hint="start each generate call with a fresh cache (prefix caching across calls is not supported "
                "by the circuit interventions)",
            )
        for role, cache in self._caches.items():
            n = cache.get_seq_length(self._layer)
            if n != past:
                raise MechsteerError(
                    f"block surgery on layer {self._layer}: the {role} pass's cache holds {n} positions but the "
                    f"model's holds {past}; the model's cache was changed outside the forward pass (cropped or "
                    "reordered)",
                    hint="use greedy decoding or sampling; beam search and assisted decoding are not supported "
                    "by the circuit interventions",
                )

    def select_rows(self, indices) -> None:
        """Keep only these batch rows in every side cache (the model's cache dropped its ended rows)."""
        for cache in self._caches.values():
            cache.batch_select_indices(indices)

    def get(self, role: str):
        """The side cache for `role` (created empty on first use in a sequence), or None when uncached."""
        if not self._active:
            return None
        if role not in self._caches:
            from transformers import DynamicCache

            self._caches[role] = DynamicCache(config=self._config)
        return self._caches[role]
