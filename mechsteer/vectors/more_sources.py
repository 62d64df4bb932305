"""Builders for the `mean_diff`, `lm_eval_steered` and `gguf_control` vector kinds (specs in
`mechsteer.spec.vector_sources`). Imported at the end of `mechsteer.vectors.sources` so they register with
VECTOR_BUILDERS. `mean_diff` needs the model: it reads `BuildContext.lm` (a LoadedModel or a callable
returning one), which the engine sets when it loads each model.
"""

from __future__ import annotations

from mechsteer.errors import VectorError
from mechsteer.vectors.sources import VECTOR_BUILDERS, BuildContext, _subset
from mechsteer.vectors.vector_set import VectorSet


def _need_lm(ctx: BuildContext, what: str):
    lm = ctx.lm() if callable(ctx.lm) else ctx.lm
    if lm is None:
        raise VectorError(f"{what} computes vectors with the model, but no model was given to the vector builder",
                          hint="this is a mechsteer bug when it happens inside `mechsteer run`")
    return lm


@VECTOR_BUILDERS.register("lm_eval_steered")
def build_lm_eval_steered(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.vectors.io_formats import load_lm_eval_steered

    vs = load_lm_eval_steered(ctx.resolve_path(spec.path), ctx.n_layers, ctx.d_model,
                              apply_coefficient=spec.apply_coefficient)
    return _subset(vs, spec.layers, ctx, f"lm-eval steering file {spec.path}")


@VECTOR_BUILDERS.register("gguf_control")
def build_gguf_control(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.vectors.io_formats import load_gguf_control

    vs = load_gguf_control(ctx.resolve_path(spec.path), ctx.n_layers, ctx.d_model, scale=spec.scale)
    return _subset(vs, spec.layers, ctx, f"GGUF control vector {spec.path}")


@VECTOR_BUILDERS.register("mean_diff")
def build_mean_diff(spec, ctx: BuildContext) -> VectorSet:
    from mechsteer.train.data import encode_prompts
    from mechsteer.vectors.mean_diff import mean_diff_generations, mean_diff_prompts

    lm = _need_lm(ctx, "mean_diff")
    layers = ctx.layers(spec.layers, "mean_diff.layers")
    if spec.generations is None:
        pos = encode_prompts(lm, spec.positive, spec.template, None)
        neg = encode_prompts(lm, spec.negative, spec.template, None)
        return mean_diff_prompts(lm, pos, neg, layers, spec.position, spec.batch_size)
    g = spec.generations
    from mechsteer.eval.mini_task import generate_mini
    from mechsteer.train.rewards import Completion, named_reward

    problems = generate_mini(split=g.split, n=g.n)
    ids = encode_prompts(lm, [p["problem"] for p in problems], spec.template, None)
    grader = named_reward(g.grader)

    def correct(text: str, gold: str) -> bool:
        return grader(Completion(text, gold, (), True)).reward > 0

    return mean_diff_generations(lm, problems, ids, layers, samples=g.samples, temperature=g.temperature,
                                 max_new_tokens=g.max_new_tokens, grade=correct, seed=g.seed,
                                 batch_size=spec.batch_size)
