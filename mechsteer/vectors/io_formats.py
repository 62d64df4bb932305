"""Other tools' steering-vector formats: lm-evaluation-harness `steered` (.pt) and llama.cpp / repeng control
vectors (GGUF), both directions.

Layer conventions (all three tools add to the output of a decoder block, at every position):
* lm-eval: key `layers.N` = hookpoint `model.base_model.layers.N` (the output of block N) -> row N;
* llama.cpp: tensor `direction.N` is added to `l_out` of block N (0-based); llama.cpp rejects
  `direction.0`, so block 0 cannot be exported for it (repeng reads and writes it) -> row N.

Safety: lm-eval itself loads its `.pt` with `torch.load(weights_only=False)`, which runs arbitrary pickled
code. mechsteer loads with `weights_only=True` only (tensors, numbers, strings, None, dicts) and says so
when a file needs more. Exports contain nothing else, so both tools read them.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mechsteer.atomic import atomic_path
from mechsteer.errors import VectorError
from mechsteer.vectors.vector_set import VectorSet

LM_EVAL_KEY = re.compile(r"^layers\.(\d+)$")
GGUF_KEY = re.compile(r"^direction\.(\d+)$")
GGUF_ARCH = "controlvector"


def _stack(rows: dict[int, torch.Tensor], n_layers: int, d_model: int, path: Path, meta: dict) -> VectorSet:
    bad = [i for i in rows if not 0 <= i < n_layers]
    if bad:
        raise VectorError(f"{path}: layers {sorted(bad)} do not exist in a model with {n_layers} layers")
    out = torch.zeros(n_layers, d_model)
    for i, v in rows.items():
        if v.numel() != d_model:
            raise VectorError(
                f"{path}: the vector for layer {i} has {v.numel()} values; the model's d_model is {d_model}"
            )
        out[i] = v.reshape(-1).float()
    if not torch.isfinite(out).all():
        raise VectorError(f"{path}: contains NaN or inf")
    return VectorSet(out, sorted(rows), meta)


# ----------------------------------------------------------------------------------------- lm-eval


def load_lm_eval_steered(path: str | Path, n_layers: int, d_model: int, *, apply_coefficient: bool = True) -> VectorSet:
    """Read an lm-eval `steered` .pt file into a VectorSet (safe load; only `add` entries on `layers.N`)."""
    path = Path(path)
    if not path.is_file():
        raise VectorError(f"lm-eval steering file not found: {path}", hint="paths are relative to the study file")
    try:
        cfg = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VectorError(
            f"{path}: cannot be read safely with torch.load(weights_only=True): {first}",
            hint="the file holds more than tensors, numbers and strings (pickled objects). mechsteer never "
            "unpickles code; re-save it with plain tensors, e.g. {'layers.N': {'steering_vector': tensor, "
            "'steering_coefficient': 1.0, 'action': 'add'}}",
        ) from None
    if not isinstance(cfg, dict) or not cfg:
        raise VectorError(
            f"{path}: expected a non-empty dict {{hookpoint: {{steering_vector, ...}}}}, got {type(cfg).__name__}"
        )
    rows: dict[int, torch.Tensor] = {}
    for key, entry in cfg.items():
        m = LM_EVAL_KEY.match(str(key))
        if not m:
            raise VectorError(
                f"{path}: hookpoint {key!r} is not a decoder-block output `layers.N`",
                hint="only block outputs map to mechsteer's `add`; other hookpoints are not supported",
            )
        if not isinstance(entry, dict) or not torch.is_tensor(entry.get("steering_vector")):
            raise VectorError(f"{path}: entry {key!r} has no tensor `steering_vector`")
        action = entry.get("action", "add")
        if action != "add":
            raise VectorError(f"{path}: entry {key!r} uses action {action!r}; only `add` has a mechsteer equivalent")
        for unsupported in ("bias", "head_index"):
            if entry.get(unsupported) is not None:
                raise VectorError(f"{path}: entry {key!r} sets {unsupported!r}, which `add` cannot express")
        coef = float(entry.get("steering_coefficient", 1.0)) if apply_coefficient else 1.0
        rows[int(m.group(1))] = entry["steering_vector"].detach().float().reshape(-1) * coef
    return _stack(rows, n_layers, d_model, path, {"source": f"lm_eval_steered({path.name})"})


def save_lm_eval_steered(vs: VectorSet, path: str | Path, *, coefficient: float = 1.0) -> Path:
    """Write `vs` as an lm-eval `steered` .pt file (`lm_eval --model steered --model_args steer_path=...`)."""
    path = Path(path)
    payload = {
        f"layers.{i}": {
            "steering_vector": vs.vectors[i].clone(),
            "steering_coefficient": float(coefficient),
            "action": "add",
            "bias": None,
            "head_index": None,
        }
        for i in vs.layers
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


# ----------------------------------------------------------------------------------------- GGUF


def load_gguf_control(path: str | Path, n_layers: int, d_model: int, *, scale: float = 1.0) -> VectorSet:
    """Read a llama.cpp / repeng control vector (tensors `direction.N`) into a VectorSet, times `scale`."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"GGUF control vector not found: {path}", hint="paths are relative to the study file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, struct.error, ...
        raise VectorError(f"{path}: not a readable GGUF file ({e})") from None
    rows: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        m = GGUF_KEY.match(t.name)
        if not m:
            continue
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise VectorError(f"{path}: tensor {t.name} has type {t.tensor_type.name}; control vectors are F32")
        rows[int(m.group(1))] = torch.from_numpy(t.data.copy()).float().reshape(-1) * scale
    if not rows:
        raise VectorError(f"{path}: no `direction.N` tensors (is this a control vector?)")
    hint = reader.get_field(f"{GGUF_ARCH}.model_hint")
    meta = {"source": f"gguf_control({path.name}, scale={scale})"}
    if hint is not None and len(hint.parts):
        meta["model_hint"] = bytes(hint.parts[-1]).decode("utf-8", errors="replace")
    return _stack(rows, n_layers, d_model, path, meta)


def save_gguf_control(
    vs: VectorSet, path: str | Path, *, model_hint: str = "llama", include_layer0: bool = False
) -> Path:
    """Write `vs` as a GGUF control vector (`llama-cli --control-vector FILE`, repeng `import_gguf`).

    llama.cpp rejects `direction.0`: a set with a layer-0 row raises unless `include_layer0=True` (for repeng),
    or drop that row first (`vs.select([...])`)."""
    import gguf

    path = Path(path)
    layers = list(vs.layers)
    if 0 in layers and not include_layer0:
        raise VectorError(
            "llama.cpp cannot load a control vector for block 0 (`direction.0` is rejected)",
            hint="drop row 0 (vs.select(layers[1:])) or pass include_layer0=True for repeng",
        )
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(layers))
        for i in layers:
            writer.add_tensor(f"direction.{i}", vs.vectors[i].numpy().astype("float32"))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
