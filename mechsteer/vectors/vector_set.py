"""The VectorSet value and its safetensors format.

File layout: tensor `vectors` float32 `[n_layers, d_model]` (absent rows are zero), tensor `layers` int64
`[k]` (the rows that exist), and string metadata: `format=mechsteer.vectors/1`, `model`, `n_layers`,
`d_model`, `source` (how it was made), plus free-form keys (training step, reward, lr, seed, ...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mechsteer.atomic import atomic_path
from mechsteer.errors import VectorError

FORMAT = "mechsteer.vectors/1"


@dataclass
class VectorSet:
    """A stack of steering vectors, one row per decoder block: `vectors` float32 [n_layers, d_model] (absent rows
    zero), `layers` the rows present, `meta` the string metadata of its file (how it was made, training step, lr,
    ...). Built, saved and loaded through this module; every intervention reads its rows from one."""

    vectors: torch.Tensor  # float32 [n_layers, d_model]
    layers: list[int]  # rows present
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.vectors.dim() != 2:
            raise VectorError(f"a vector set must be [n_layers, d_model], got shape {tuple(self.vectors.shape)}")
        self.vectors = self.vectors.detach().to(torch.float32).cpu().contiguous()
        self.layers = sorted(int(i) for i in self.layers)
        n = self.vectors.shape[0]
        bad = [i for i in self.layers if not 0 <= i < n]
        if bad:
            raise VectorError(f"vector set lists rows {bad} outside 0..{n - 1}")

    @property
    def n_layers(self) -> int:
        """Rows of the stack: the depth of the model it was made for."""
        return self.vectors.shape[0]

    @property
    def d_model(self) -> int:
        """Width of each row: the model's hidden size."""
        return self.vectors.shape[1]

    def row(self, layer: int) -> torch.Tensor:
        """Row `layer`; a row the set does not have is a VectorError listing those it has."""
        if layer not in self.layers:
            raise VectorError(f"vector set has no row for layer {layer}; rows present: {_fmt_rows(self.layers)}")
        return self.vectors[layer]

    def norms(self) -> dict[int, float]:
        """L2 norm of each present row."""
        return {i: float(self.vectors[i].norm()) for i in self.layers}

    def sha256(self) -> str:
        """Content hash (rows present and their float32 values), independent of metadata."""
        h = hashlib.sha256()
        h.update(json.dumps(self.layers).encode())
        h.update(self.vectors[self.layers].numpy().tobytes() if self.layers else b"")
        return h.hexdigest()

    def select(self, layers: list[int]) -> VectorSet:
        """A copy keeping only `layers` (the others zeroed and dropped from `layers`); missing rows are a
        VectorError."""
        missing = [i for i in layers if i not in self.layers]
        if missing:
            raise VectorError(f"vector set has no rows {missing}; rows present: {_fmt_rows(self.layers)}")
        v = torch.zeros_like(self.vectors)
        v[layers] = self.vectors[layers]
        return VectorSet(v, list(layers), dict(self.meta))

    @classmethod
    def load(cls, path: str | Path) -> VectorSet:
        """Read a mechsteer safetensors vector set (see `load_vector_set`)."""
        return load_vector_set(path)

    def save(self, path: str | Path, **meta: object) -> Path:
        """Write this set atomically as safetensors with metadata (see `save_vector_set`)."""
        return save_vector_set(self, path, **meta)

    def check_fits(self, n_layers: int, d_model: int, what: str = "model") -> None:
        """Raise a VectorError naming both shapes when the set was not made for a model of `n_layers` x `d_model`."""
        if (self.n_layers, self.d_model) != (n_layers, d_model):
            raise VectorError(
                f"vector set shape [{self.n_layers}, {self.d_model}] (layers x d_model) does not fit the {what} "
                f"[{n_layers}, {d_model}]",
                hint="vectors are trained per model; use a set made for this model, or `transfer` with a layer map",
            )


def _fmt_rows(rows: list[int]) -> str:
    if not rows:
        return "none"
    if rows == list(range(rows[0], rows[-1] + 1)) and len(rows) > 3:
        return f"{rows[0]}..{rows[-1]}"
    return ", ".join(map(str, rows))


def save_vector_set(vs: VectorSet, path: str | Path, **meta: object) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written vector file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md = {**vs.meta, **{k: str(v) for k, v in meta.items()}}
    md.update(format=FORMAT, n_layers=str(vs.n_layers), d_model=str(vs.d_model), sha256=vs.sha256())
    with atomic_path(path) as tmp:
        save_file({"vectors": vs.vectors, "layers": torch.tensor(vs.layers, dtype=torch.int64)}, tmp, metadata=md)
    return path


def load_vector_set(path: str | Path) -> VectorSet:
    """Read a mechsteer safetensors vector set, with clear errors for every way the file can be wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"vector file not found: {path}", hint="check the path (relative to the study file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            meta = dict(f.metadata() or {})
            if "vectors" not in keys:
                raise VectorError(
                    f"{path}: no tensor named 'vectors' (found: {', '.join(sorted(keys)) or 'none'})",
                    hint="mechsteer vector files hold `vectors` [n_layers, d_model] and `layers`; "
                    "import other formats with the `lm_eval_steered` or `gguf` vector kinds",
                )
            vectors = f.get_tensor("vectors")
            rows = f.get_tensor("layers") if "layers" in keys else None
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise VectorError(f"{path}: not a readable safetensors file ({e})") from None
    if vectors.dim() != 2:
        raise VectorError(f"{path}: 'vectors' has shape {tuple(vectors.shape)}; expected [n_layers, d_model]")
    if rows is None:
        layers = list(range(vectors.shape[0]))
    elif rows.dim() != 1 or rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool:
        raise VectorError(
            f"{path}: 'layers' has shape {tuple(rows.shape)} and dtype {rows.dtype}; expected the indices of the "
            "rows present, a 1-D integer tensor [k]"
        )
    else:
        layers = rows.tolist()
        bad = sorted({i for i in layers if not 0 <= i < vectors.shape[0]})
        if bad or len(set(layers)) != len(layers):
            what = f"rows {bad[:8]} outside 0..{vectors.shape[0] - 1}" if bad else "a row twice"
            raise VectorError(f"{path}: 'layers' lists {what}; expected distinct indices of rows of 'vectors'")
    if not vectors.is_floating_point():
        raise VectorError(f"{path}: 'vectors' has dtype {vectors.dtype}; expected a float dtype")
    if not torch.isfinite(vectors).all():
        raise VectorError(f"{path}: 'vectors' contains NaN or inf")
    meta.setdefault("path", str(path))
    return VectorSet(vectors, layers, meta)
