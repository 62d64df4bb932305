"""`dtype: auto`: the compute dtype that suits the machine, decided without importing torch when possible.

bfloat16 is the paper's dtype and fast where the hardware has it: CUDA GPUs from Ampere on, and x86 CPUs with
AVX512-BF16 or AMX-BF16. On a CPU without native bf16 (AVX2 only), bf16 matmuls are emulated and several
times slower than float32 (issue 10; benchmarks/cpu_dtype.py measures the ratio), so `auto` picks float32
there. The decision and its reason are recorded in the cell (LoadedModel.provenance()); the
compiler hashes the resolved name, so a cell computed in float32 is never reused for a bfloat16 run.

`resolve_dtype` imports torch only when the answer depends on a CUDA device (device `cuda...`, or `auto`
when an NVIDIA GPU is visible), i.e. only when the run will need torch anyway.
"""

from __future__ import annotations

from mechsteer import machine

EXPLICIT = ("bfloat16", "float16", "float32")


def _cuda_available() -> bool:
    # `device: auto` resolves exactly like models.loading.resolve_device; torch is imported only when a GPU
    # is visible (then the run needs torch anyway), so a CPU-only machine decides without torch.
    if not machine.nvidia_gpu_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def _cuda_bf16(device: str) -> tuple[str, str]:
    import torch

    if not torch.cuda.is_available():
        return "float32", "CUDA requested but not available"
    index = torch.device(device).index
    name = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    with torch.cuda.device(index if index is not None else torch.cuda.current_device()):
        ok = torch.cuda.is_bf16_supported()
    if ok:
        return "bfloat16", f"CUDA GPU {name} supports bfloat16"
    return "float16", f"CUDA GPU {name} lacks bfloat16; float16 is its fast half precision"


def resolve_dtype(dtype: str, device: str = "auto") -> tuple[str, str]:
    """(dtype name, reason) for a model entry's `dtype` on its `device`.

    Explicit dtypes pass through. `auto`: bfloat16 on bf16-capable CUDA GPUs (float16 on older ones), bfloat16
    on CPUs with native bf16, float32 on CPUs without it or whose flags cannot be read."""
    if dtype in EXPLICIT:
        return dtype, "set in the study"
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}; known: auto, {', '.join(EXPLICIT)}")
    on_cuda = device.startswith("cuda") or (device == "auto" and _cuda_available())
    if on_cuda:
        name, why = _cuda_bf16("cuda" if device == "auto" else device)
        return name, "auto: " + why
    ok, why = machine.cpu_has_native_bf16()
    return ("bfloat16" if ok else "float32"), "auto: " + why
