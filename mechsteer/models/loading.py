"""Load a study's model: embedded alias, local directory, or Hugging Face hub id.

Device and dtype are explicit: `auto` device resolves to cuda when available, else cpu, and the resolved
values are recorded. Hub problems (offline, missing, gated) become one clear ModelLoadError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mechsteer.errors import ModelLoadError
from mechsteer.models.adapters import ArchitectureAdapter, adapter_for
from mechsteer.spec.models import EMBEDDED_MODELS, KNOWN_SHAPES, ModelShape, ModelSpec

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    name: str
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    adapter: ArchitectureAdapter
    shape: ModelShape
    device: torch.device
    dtype: torch.dtype
    source: str  # embedded | local | hub
    revision: str | None

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "id": self.spec.id,
            "source": self.source,
            "revision": self.revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "architecture": self.shape.architecture,
            "n_layers": self.shape.n_layers,
            "d_model": self.shape.d_model,
        }


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available", hint="use device: cpu or auto")
    return dev


def _locate(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str]:
    """(where to load from, source kind)."""
    if spec.id in EMBEDDED_MODELS:
        from mechsteer.models.embedded import embedded_dir

        return str(embedded_dir()), "embedded"
    p = Path(spec.id).expanduser()
    if not p.is_absolute() and base_dir is not None and (base_dir / p).exists():
        p = base_dir / p
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"local model directory {p} has no config.json",
                                 hint="point `id` at a directory written by save_pretrained")
        return str(p), "local"
    if spec.id.startswith((".", "/", "~")) or spec.id.count("/") > 1:
        raise ModelLoadError(f"local model directory not found: {p}", hint="check the path (relative to the study file)")
    return spec.id, "hub"


def load_model(name: str, spec: ModelSpec, base_dir: Path | None = None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, source = _locate(spec, base_dir)
    device = resolve_device(spec.device)
    dtype = DTYPES[spec.dtype]
    kwargs = {"revision": spec.revision} if source == "hub" and spec.revision else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        if source != "hub":
            raise ModelLoadError(f"cannot load model {spec.id!r} from {where}: {e}") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelLoadError(
            f"cannot load {spec.id!r} from the Hugging Face hub"
            + (" (HF_HUB_OFFLINE=1 and it is not in the local cache)" if offline else f": {str(e).splitlines()[0]}"),
            hint="download it where the hub is reachable (`hf download ID --local-dir DIR`) and set the model's "
            "`id` to that directory, or check the id, revision and access token",
        ) from None
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from mechsteer.models.stops import stop_string_ids

    stop_string_ids(tokenizer, spec.stop, name)  # a bad `stop:` entry fails here, before any cell runs
    adapter = adapter_for(model)
    shape = adapter.shape(model)
    known = KNOWN_SHAPES.get(spec.id)
    if known is not None and (known.n_layers, known.d_model) != (shape.n_layers, shape.d_model):
        raise ModelLoadError(f"{spec.id}: loaded shape {shape} differs from the known shape {known}")
    revision = getattr(model.config, "_commit_hash", None) or spec.revision
    if source == "embedded":
        revision = Path(where).name
    return LoadedModel(name, spec, model, tokenizer, adapter, shape, device, dtype, source, revision)
