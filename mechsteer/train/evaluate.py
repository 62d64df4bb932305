"""Held-out accuracy of the model as it is right now (whatever hooks are attached): greedy and sampled.

Used by the trainer before, during and after training (with the vectors being trained active), and by the
bundled-vector measurement script (with vectors applied through the `add` intervention). Both graders are
reported: `lenient` (last \\boxed{} OR last number correct) and `boxed` (the paper's metric).
"""

from __future__ import annotations

import time

import torch

from mechsteer.train.rewards import Completion, grade_completion
from mechsteer.train.rollout import pad_prompts, sample


def _seed_gen(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def accuracy(
    lm,
    problems: list[dict],
    prompt_ids: list[list[int]],
    *,
    temperature: float,
    samples: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    template: str = "qwen_math",
    stop_ids: list[int],
) -> dict:
    """Accuracy over `samples` completions per problem (temperature 0 = greedy, one sample)."""
    device = next(lm.model.parameters()).device
    gen = _seed_gen(seed, device)
    per_batch = max(1, batch_size // samples)
    n = lenient = boxed = has_box = finished = 0
    length = 0
    for start in range(0, len(problems), per_batch):
        prom = pad_prompts(prompt_ids[start : start + per_batch], lm.tokenizer.pad_token_id, device)
        ro = sample(
            lm.model,
            prom,
            group_size=samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop_ids=stop_ids,
            pad_id=lm.tokenizer.pad_token_id,
            generator=gen,
        )
        for r, toks in enumerate(ro.token_lists()):
            prob = problems[start + r // samples]
            text = lm.tokenizer.decode(toks, skip_special_tokens=True)
            g = grade_completion(Completion(text, str(prob["answer"]), tuple(toks), bool(ro.finished[r])), template)
            n += 1
            lenient += g.boxed_correct or g.last_number_correct
            boxed += g.boxed_correct
            has_box += g.has_box
            finished += bool(ro.finished[r])
            length += len(toks)
    return {
        "n": n,
        "lenient": lenient / n,
        "boxed": boxed / n,
        "boxed_rate": has_box / n,
        "finished": finished / n,
        "mean_len": length / n,
    }


def evaluate(
    lm,
    problems: list[dict],
    prompt_ids: list[list[int]],
    *,
    greedy: bool = True,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    template: str = "qwen_math",
) -> dict:
    """{"greedy": {...}, "sampled": {...}, "seconds": s} on the given problems (see `accuracy`)."""
    from mechsteer.generation import lm_stop_token_ids

    stops = lm_stop_token_ids(lm)
    t0 = time.perf_counter()
    out: dict = {}
    with torch.no_grad():
        if greedy:
            out["greedy"] = accuracy(
                lm,
                problems,
                prompt_ids,
                temperature=0.0,
                samples=1,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                seed=seed,
                template=template,
                stop_ids=stops,
            )
        if samples:
            out["sampled"] = accuracy(
                lm,
                problems,
                prompt_ids,
                temperature=temperature,
                samples=samples,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                seed=seed,
                template=template,
                stop_ids=stops,
            )
            out["sampled"]["temperature"] = temperature
    out["seconds"] = time.perf_counter() - t0
    return out
