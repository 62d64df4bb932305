"""Builder of the `trained` vector kind: read what `mechsteer train` wrote (final vectors or a checkpoint)."""

from __future__ import annotations

from pathlib import Path

from mechsteer.engine.vectors import BuildContext, subset
from mechsteer.errors import VectorError
from mechsteer.spec.training import trained_vectors_path
from mechsteer.vectors.vector_set import VectorSet, load_vector_set


def build_trained(spec, ctx: BuildContext) -> VectorSet:
    path, command = trained_vectors_path(spec)
    if not path.is_file():
        what = f"checkpoint {spec.checkpoint}" if spec.checkpoint else "final vectors"
        raise VectorError(
            f"the training run's {what} are not there: {path}",
            hint=f"train them first: `{command}` (or set `output:` to where the run wrote them)",
        )
    vs = load_vector_set(path)
    vs.meta.setdefault(
        "source",
        f"trained({Path(spec.train).name}{', ' + spec.profile if spec.profile else ''}"
        f"{', ' + path.parent.name if spec.checkpoint else ''})",
    )
    return subset(vs, spec.layers, ctx, f"trained vectors {path}")
