"""Load a study's model: embedded alias, local directory, or Hugging Face hub id.

Device and dtype are explicit: `auto` device resolves to cuda when available, else cpu, and the resolved
values are recorded. Hub problems (offline, missing, gated) become one clear ModelLoadError; with the hub
unreachable (`mechsteer.hub`) only the local cache is tried, so that error comes at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mechsteer.errors import ModelLoadError
from mechsteer.hub import hub_unreachable
from mechsteer.models.adapters import ArchitectureAdapter, adapter_for
from mechsteer.models.dtype import resolve_dtype
from mechsteer.models.identity import model_source
from mechsteer.spec.models import KNOWN_SHAPES, ModelShape, ModelSpec

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    """A model ready for a study: the torch module with its tokenizer and architecture adapter, its shape, device
    and dtype, and where it came from (recorded in every cell)."""

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
    dtype_reason: str = "set in the study"
    """Why this dtype (models.dtype.resolve_dtype): the study named it, or what `auto` found on this machine."""

    def provenance(self) -> dict:
        """What a cell records about the model: id, source, revision, the dtype used and why, device and shape."""
        return {
            "name": self.name,
            "id": self.spec.id,
            "source": self.source,
            "revision": self.revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "dtype_requested": self.spec.dtype,
            "dtype_reason": self.dtype_reason,
            "device": str(self.device),
            "architecture": self.shape.architecture,
            "n_layers": self.shape.n_layers,
            "d_model": self.shape.d_model,
        }


def resolve_device(device: str) -> torch.device:
    """The torch device for `device` (`auto`: CUDA when available); asking for CUDA without it is a located error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available", hint="use device: cpu or auto")
    return dev


def _locate(spec: ModelSpec, base_dir: Path | None) -> tuple[str, str]:
    """(where to load from, source kind); the same reading of `id` as the planner's (`identity.model_source`)."""
    source, p = model_source(spec.id, base_dir)
    if source == "embedded":
        from mechsteer.models.embedded import embedded_dir

        return str(embedded_dir(spec.id)), "embedded"
    if source == "local":
        if not (p / "config.json").is_file():
            raise ModelLoadError(
                f"local model directory {p} has no config.json",
                hint="point `id` at a directory written by save_pretrained",
            )
        return str(p), "local"
    if source == "missing":
        raise ModelLoadError(
            f"local model directory not found: {p}", hint="check the path (relative to the study file)"
        )
    return spec.id, "hub"


def load_model(name: str, spec: ModelSpec, base_dir: Path | None = None) -> LoadedModel:
    """Load the model a spec names (embedded, a local folder or a hub id) with its tokenizer at the resolved device
    and dtype, offline when the hub cannot be reached; a failure is a ModelLoadError that says why."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # mechsteer's own progress display says what is loading

    where, source = _locate(spec, base_dir)
    device = resolve_device(spec.device)
    dtype_name, dtype_reason = resolve_dtype(spec.dtype, str(device))
    dtype = DTYPES[dtype_name]
    kwargs = {"revision": spec.revision} if source == "hub" and spec.revision else {}
    # Hub unreachable (offline setting, or no connection: probed once per process): load from the local
    # cache only, and fail at once instead of after huggingface_hub's retries.
    unreachable = hub_unreachable() if source == "hub" else None
    if unreachable:
        kwargs["local_files_only"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        if source != "hub":
            raise ModelLoadError(f"cannot load model {spec.id!r} from {where}: {e}") from None
        raise ModelLoadError(
            f"cannot load {spec.id!r} from the Hugging Face hub"
            + (
                f" (unreachable: {unreachable}; it is not in the local cache)"
                if unreachable
                else f": {str(e).splitlines()[0]}"
            ),
            hint="download it where the hub is reachable (`hf download ID --local-dir DIR`) and set the model's "
            "`id` to that local directory, or check the id, revision and access token",
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
    return LoadedModel(name, spec, model, tokenizer, adapter, shape, device, dtype, source, revision, dtype_reason)
