"""Builder of the `trained` vector kind: read what `mechsteer train` wrote (final vectors or a checkpoint)."""

from __future__ import annotations

from pathlib import Path

from mechsteer.engine.vectors import BuildContext, subset
from mechsteer.errors import VectorError
from mechsteer.vectors.vector_set import VectorSet, load_vector_set


def trained_vectors_path(spec) -> tuple[Path, str]:
    """(the vector file a `trained` spec names, the command that writes it). `spec.train` is absolute (the
    compiler binds paths)."""
    from mechsteer.spec.training import load_train_spec
    from mechsteer.train.checkpoint import checkpoint_dir

    ts = load_train_spec(spec.train, spec.profile)
    out = Path(spec.output) if spec.output else ts.output_dir()
    command = f"mechsteer train {spec.train}" + (f" --profile {spec.profile}" if spec.profile else "") + \
        (f" --output {spec.output}" if spec.output else "")
    if spec.checkpoint is not None:
        return checkpoint_dir(out / "checkpoints", spec.checkpoint) / "vectors.safetensors", command
    return out / "vectors.safetensors", command


def build_trained(spec, ctx: BuildContext) -> VectorSet:
    path, command = trained_vectors_path(spec)
    if not path.is_file():
        what = f"checkpoint {spec.checkpoint}" if spec.checkpoint else "final vectors"
        raise VectorError(f"the training run's {what} are not there: {path}",
                          hint=f"train them first: `{command}` (or set `output:` to where the run wrote them)")
    vs = load_vector_set(path)
    vs.meta.setdefault("source", f"trained({Path(spec.train).name}{', ' + spec.profile if spec.profile else ''}"
                                 f"{', step ' + str(spec.checkpoint) if spec.checkpoint else ''})")
    return subset(vs, spec.layers, ctx, f"trained vectors {path}")
