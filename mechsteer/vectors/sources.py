"""Builders that turn a study's vector specs into VectorSets for one model (one registry, one function
per `kind`). Dependencies between sets (`norm_like`, `of`) are resolved through the build context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mechsteer.errors import VectorError
from mechsteer.registry import Registry
from mechsteer.spec.layers import LayerResolutionError, resolve_layers
from mechsteer.vectors.vector_set import VectorSet, load_vector_set

VECTOR_BUILDERS: Registry[Callable] = Registry("vector source kind")


@dataclass
class BuildContext:
    """What a builder may use: the target model's shape, the study's vector specs, path resolution."""

    n_layers: int
    d_model: int
    specs: dict
    resolve_path: Callable[[str], Path]
    model_id: str = ""
    lm: Any = None
    """The loaded model (`mechsteer.models.loading.LoadedModel`: model, tokenizer, adapter), or a zero-argument
    callable returning it; only builders that compute vectors with the model (`mean_diff`) read it."""
    built: dict[str, VectorSet] = field(default_factory=dict)
    _building: list[str] = field(default_factory=list)

    def get(self, name: str, *, check_shape: bool = True) -> VectorSet:
        """Build (once) the named set. `check_shape=False` is for sets applied through `transfer`, which
        checks donor/recipient shapes itself and may map layers by relative depth."""
        if name in self.built:
            return self.built[name]
        if name not in self.specs:
            raise VectorError(f"unknown vector set {name!r}")
        if name in self._building:
            raise VectorError(f"vector sets refer to each other in a cycle: {' -> '.join(self._building + [name])}")
        self._building.append(name)
        try:
            spec = self.specs[name]
            vs = VECTOR_BUILDERS.get(spec.kind)(spec, self)
            if check_shape:
                vs.check_fits(self.n_layers, self.d_model, f"model {self.model_id or '?'}")
            vs.meta.setdefault("name", name)
            self.built[name] = vs
            return vs
        finally:
            self._building.pop()

    def layers(self, sel, what: str) -> list[int]:
        try:
            return resolve_layers(sel, self.n_layers)
        except LayerResolutionError as e:
            raise VectorError(f"{what}: {e}") from None


def _subset(vs: VectorSet, sel, ctx: BuildContext, what: str) -> VectorSet:
    return vs if sel is None else vs.select(ctx.layers(sel, what))


@VECTOR_BUILDERS.register("file")
def build_file(spec, ctx: BuildContext) -> VectorSet:
    vs = load_vector_set(ctx.resolve_path(spec.path))
    vs.meta.setdefault("source", "file")
    if spec.layers is None:
        return vs  # the caller checks the shape (or, for transfer, the intervention does)
    vs.check_fits(ctx.n_layers, ctx.d_model, f"model {ctx.model_id or '?'} (file {spec.path})")
    return _subset(vs, spec.layers, ctx, f"vector file {spec.path}")


@VECTOR_BUILDERS.register("bundled")
def build_bundled(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.spec.checks import BUNDLED_VECTOR_DIR, bundled_vector_names

    path = BUNDLED_VECTOR_DIR / f"{spec.name}.safetensors"
    if not path.is_file():
        raise VectorError(f"no bundled vector set {spec.name!r}; bundled: {', '.join(bundled_vector_names()) or 'none'}")
    vs = load_vector_set(path)
    return _subset(vs, spec.layers, ctx, f"bundled vector set {spec.name}")


@VECTOR_BUILDERS.register("zeros")
def build_zeros(spec, ctx: BuildContext) -> VectorSet:
    return VectorSet(torch.zeros(ctx.n_layers, ctx.d_model), ctx.layers(spec.layers, "zeros"), {"source": "zeros"})


@VECTOR_BUILDERS.register("random")
def build_random(spec, ctx: BuildContext) -> VectorSet:
    """Gaussian directions from a CPU generator (identical on every device), scaled per row."""
    if spec.norm_like is not None:
        ref = ctx.get(spec.norm_like)
        layers, norms = ref.layers, ref.norms()
    else:
        if spec.norm is None:
            raise VectorError("random vectors need `norm` or `norm_like`")
        layers = ctx.layers(spec.layers, "random")
        norms = {i: spec.norm for i in layers}
    gen = torch.Generator(device="cpu").manual_seed(spec.seed)
    dirs = torch.randn(ctx.n_layers, ctx.d_model, generator=gen, dtype=torch.float32)
    out = torch.zeros(ctx.n_layers, ctx.d_model)
    for i in layers:
        out[i] = dirs[i] / dirs[i].norm() * norms[i]
    src = f"random(seed={spec.seed}, " + (f"norm_like={spec.norm_like})" if spec.norm_like else f"norm={spec.norm})")
    return VectorSet(out, layers, {"source": src})


@VECTOR_BUILDERS.register("scaled")
def build_scaled(spec, ctx: BuildContext) -> VectorSet:
    ref = ctx.get(spec.of)
    return VectorSet(ref.vectors * spec.factor, ref.layers, {**ref.meta, "source": f"scaled({spec.of}, {spec.factor})"})


# More kinds (mean_diff, lm_eval_steered, gguf_control) register on import.
from mechsteer.vectors import more_sources as _more_sources  # noqa: E402,F401
