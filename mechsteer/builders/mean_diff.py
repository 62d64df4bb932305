"""Mean activation differences (contrastive activation addition), computed at the residual stream right
after each chosen block: the exact place where `add` puts row l, so a mean-diff set can be used as is.

Two contrasts:
* two prompt sets: mean over prompts of the activation at the last prompt token (or the mean over the
  prompt's tokens) for `positive`, minus the same for `negative`;
* correct vs incorrect generations: sample the model on task problems, grade the answers, and take the mean
  activation over the generated tokens of correct answers minus that of incorrect ones.
Activations are captured with forward hooks inside a HookScope and accumulated in float32.
"""

from __future__ import annotations

import torch

from mechsteer.builders.context import BuildContext
from mechsteer.errors import VectorError
from mechsteer.hooks import HookScope
from mechsteer.models.adapters import decoder_output_tensor
from mechsteer.train.rollout import pad_prompts, sample
from mechsteer.vectors.vector_set import VectorSet


def _capture(lm, ids: torch.Tensor, mask: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Outputs of the given blocks, float32, shape (batch, tokens, d_model), for one padded batch."""
    acts: dict[int, torch.Tensor] = {}

    def grab(i):
        def hook(module, args, output):
            acts[i] = decoder_output_tensor(output).detach().float()

        return hook

    with HookScope("mean_diff") as scope, torch.no_grad():
        for i in layers:
            scope.forward_hook(lm.adapter.layer(lm.model, i), grab(i))
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    return acts


def prompt_activations(
    lm, token_lists: list[list[int]], layers: list[int], position: str, batch_size: int = 8
) -> dict[int, torch.Tensor]:
    """Per-prompt activation (n, d) at each block: the last token (`last`) or the mean over tokens (`mean`)."""
    device = next(lm.model.parameters()).device
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    for s in range(0, len(token_lists), batch_size):
        p = pad_prompts(token_lists[s : s + batch_size], lm.tokenizer.pad_token_id, device)
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
    lm,
    problems: list[dict],
    prompt_ids: list[list[int]],
    layers: list[int],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    grade,
    seed: int = 0,
    batch_size: int = 8,
) -> VectorSet:
    """Mean activation over generated tokens of correct answers minus incorrect ones (`grade(text, gold)`)."""
    from mechsteer.generation import lm_stop_token_ids

    device = next(lm.model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    d = lm.shape.d_model
    sums = {ok: {i: torch.zeros(d) for i in layers} for ok in (True, False)}
    counts = {True: 0, False: 0}
    stops, pad = lm_stop_token_ids(lm), lm.tokenizer.pad_token_id
    for s in range(0, len(problems), batch_size):
        prom = pad_prompts(prompt_ids[s : s + batch_size], pad, device)
        ro = sample(
            lm.model,
            prom,
            group_size=samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop_ids=stops,
            pad_id=pad,
            generator=gen,
        )
        ids = torch.cat([prom.ids.repeat_interleave(samples, 0), ro.tokens], dim=1)
        mask = torch.cat([prom.mask.repeat_interleave(samples, 0), ro.mask], dim=1)
        acts = _capture(lm, ids, mask, layers)
        width = prom.ids.shape[1]
        for r, toks in enumerate(ro.token_lists()):
            text = lm.tokenizer.decode(toks, skip_special_tokens=True)
            ok = bool(grade(text, str(problems[s + r // samples]["answer"])))
            n = len(toks)
            if n == 0:
                continue
            counts[ok] += n
            for i in layers:
                sums[ok][i] += acts[i][r, width : width + n].sum(dim=0).cpu()
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

    return mean_diff_generations(
        lm,
        problems,
        ids,
        layers,
        samples=g.samples,
        temperature=g.temperature,
        max_new_tokens=g.max_new_tokens,
        grade=correct,
        seed=g.seed,
        batch_size=spec.batch_size,
    )
