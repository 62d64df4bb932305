"""Builders of the basic vector kinds (`file`, `bundled`, `zeros`, `random`, `scaled`, `per_model`), named by their spec
classes' registrations in `mechsteer.spec.kinds.vectors`."""

from __future__ import annotations

import torch

from mechsteer.builders.context import BuildContext, subset
from mechsteer.errors import VectorError
from mechsteer.vectors.vector_set import VectorSet, load_vector_set


def build_file(spec, ctx: BuildContext) -> VectorSet:
    """A mechsteer safetensors vector file (rows kept by `layers`, checked against the model when selected)."""
    vs = load_vector_set(spec.path)
    vs.meta.setdefault("source", "file")
    if spec.layers is None:
        return vs  # the caller checks the shape (or, for transfer, the intervention does)
    vs.check_fits(ctx.n_layers, ctx.d_model, f"model {ctx.model_id or '?'} (file {spec.path})")
    return subset(vs, spec.layers, ctx, f"vector file {spec.path}")


def build_bundled(spec, ctx: BuildContext) -> VectorSet:
    """A vector set shipped in the package (`mechsteer/data/vectors/<name>.safetensors`)."""
    from mechsteer.spec.kinds.vectors import bundled_vector_names

    path = spec.file()
    if not path.is_file():
        raise VectorError(
            f"no bundled vector set {spec.name!r}; bundled: {', '.join(bundled_vector_names()) or 'none'}"
        )
    vs = load_vector_set(path)
    return subset(vs, spec.layers, ctx, f"bundled vector set {spec.name}")


def build_zeros(spec, ctx: BuildContext) -> VectorSet:
    """All-zero rows at the selected layers."""
    return VectorSet(torch.zeros(ctx.n_layers, ctx.d_model), ctx.layers(spec.layers, "zeros"), {"source": "zeros"})


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


def build_scaled(spec, ctx: BuildContext) -> VectorSet:
    """Another set (built first) times `factor`, with its rows and metadata."""
    ref = ctx.get(spec.of)
    return VectorSet(ref.vectors * spec.factor, ref.layers, {**ref.meta, "source": f"scaled({spec.of}, {spec.factor})"})


def build_per_model(spec, ctx: BuildContext) -> VectorSet:
    """The set this per-model set is on the context's model (`ctx.model_name`), built in the same context.
    The engine never gets here (it hands each model's context the specs `vectors_for_model` resolved); this
    serves contexts built from a study's raw specs."""
    target = spec.models.get(ctx.model_name)
    if target is None:
        named = f"model {ctx.model_name!r}" if ctx.model_name else "a context that names no model"
        raise VectorError(
            f"per-model vector set has no entry for {named} (entries: {', '.join(spec.models)})",
            hint="add `<model>: <vector set>` under the set's `models:` for every model of the study",
        )
    return ctx.get(target)
