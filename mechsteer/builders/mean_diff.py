"""Mean activation differences (contrastive activation addition), computed at the residual stream right
after each chosen block: the exact place where `add` puts row l, so a mean-diff set can be used as is.

Two contrasts:
* two prompt sets: mean over prompts of the activation at the last prompt token (or the mean over the
  prompt's tokens) for `positive`, minus the same for `negative`;
* correct vs incorrect generations: sample the model on task problems, grade the answers, and take the mean
  activation over the generated tokens of correct answers minus that of incorrect ones.
Completions come from the one sampler (`mechsteer.sequences`); activations are captured through
`mechsteer.capture` and accumulated in float32.
"""

from __future__ import annotations

import torch

from mechsteer.builders.context import BuildContext
from mechsteer.capture import block_outputs
from mechsteer.errors import VectorError
from mechsteer.generation import model_sampling
from mechsteer.sequences import SamplingSettings, pad_id, pad_prompts, pad_right, sample
from mechsteer.vectors.vector_set import VectorSet


def _capture(lm, ids: torch.Tensor, mask: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Outputs of the given blocks, float32, shape (batch, tokens, d_model), for one left-padded batch."""
    pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return block_outputs(lm.model, lm.adapter, layers, input_ids=ids, attention_mask=mask, position_ids=pos)


def prompt_activations(
    lm, token_lists: list[list[int]], layers: list[int], position: str, batch_size: int = 8
) -> dict[int, torch.Tensor]:
    """Per-prompt activation (n, d) at each block: the last token (`last`) or the mean over tokens (`mean`)."""
    device = next(lm.model.parameters()).device
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    for s in range(0, len(token_lists), batch_size):
        p = pad_prompts(token_lists[s : s + batch_size], pad_id(lm.tokenizer), device)
        acts = _capture(lm, p.ids, p.mask, layers)
        m = p.mask.unsqueeze(-1).float()
        for i in layers:
            if position == "last":
                out[i].append(acts[i][:, -1])  # left padding: the last column is every row's last token
            else:
                out[i].append((acts[i] * m).sum(dim=1) / m.sum(dim=1))
    return {i: torch.cat(v).cpu() for i, v in out.items()}


def mean_diff_prompts(
    lm,
    positive: list[list[int]],
    negative: list[list[int]],
    layers: list[int],
    position: str = "last",
    batch_size: int = 8,
) -> VectorSet:
    """mean(positive activations) - mean(negative activations) at each block."""
    pos = prompt_activations(lm, positive, layers, position, batch_size)
    neg = prompt_activations(lm, negative, layers, position, batch_size)
    sh = lm.shape
    out = torch.zeros(sh.n_layers, sh.d_model)
    for i in layers:
        out[i] = pos[i].mean(dim=0) - neg[i].mean(dim=0)
    return VectorSet(out, layers, {"source": f"mean_diff(prompts {len(positive)} vs {len(negative)}, {position})"})


def mean_diff_generations(
    lm, problems: list[dict], prompt_ids: list[list[int]], layers: list[int], settings: SamplingSettings, *, grade
) -> VectorSet:
    """Mean activation over generated tokens of correct answers minus incorrect ones (`grade(text, gold)`);
    `settings.samples` completions per problem, sampled from the model as it is (no condition)."""
    device = next(lm.model.parameters()).device
    d = lm.shape.d_model
    sums = {ok: {i: torch.zeros(d) for i in layers} for ok in (True, False)}
    counts = {True: 0, False: 0}
    pad = pad_id(lm.tokenizer)
    seqs = sample(lm.model, prompt_ids, settings, pad_id=pad, share_prefill=True, device=device)
    rows = settings.batch_size * settings.samples
    for s in range(0, len(seqs), rows):
        part = seqs[s : s + rows]  # every sequence has at least one generated token
        prom = pad_prompts([q.prompt_ids for q in part], pad, device)
        gen_ids, gen_mask = pad_right([q.generated_ids for q in part], pad, device)
        acts = _capture(lm, torch.cat([prom.ids, gen_ids], 1), torch.cat([prom.mask, gen_mask], 1), layers)
        width = prom.ids.shape[1]
        for r, q in enumerate(part):
            ok = bool(grade(q.text(lm.tokenizer), str(problems[q.prompt]["answer"])))
            counts[ok] += q.n_generated
            for i in layers:
                sums[ok][i] += acts[i][r, width : width + q.n_generated].sum(dim=0).cpu()
    if not counts[True] or not counts[False]:
        raise VectorError(
            f"mean_diff generations: {counts[True]} correct and {counts[False]} incorrect generated "
            "tokens; both groups are needed",
            hint="use more problems or samples, or another grader",
        )
    out = torch.zeros(lm.shape.n_layers, lm.shape.d_model)
    for i in layers:
        out[i] = sums[True][i] / counts[True] - sums[False][i] / counts[False]
    return VectorSet(
        out,
        layers,
        {
            "source": "mean_diff(correct - incorrect generations)",
            "tokens_correct": str(counts[True]),
            "tokens_incorrect": str(counts[False]),
        },
    )


def _need_lm(ctx: BuildContext, what: str):
    lm = ctx.lm() if callable(ctx.lm) else ctx.lm
    if lm is None:
        raise VectorError(
            f"{what} computes vectors with the model, but no model was given to the vector builder",
            hint="this is a mechsteer bug when it happens inside `mechsteer run`",
        )
    return lm


def build_mean_diff(spec, ctx: BuildContext) -> VectorSet:
    """Build a `mean_diff` set: the mean block output over `positive` minus `negative` prompts, or over correct
    minus incorrect sampled completions of `mini` problems (`generations`)."""
    from mechsteer.train.data import encode_prompts

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

    settings = model_sampling(
        lm,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        samples=g.samples,
        seed=g.seed,
        batch_size=spec.batch_size,
    )
    return mean_diff_generations(lm, problems, ids, layers, settings, grade=correct)
