"""Held-out accuracy of the model as it is right now (whatever hooks are attached): greedy and sampled.

Used by the trainer before, during and after training (with the vectors being trained active), and by the
bundled-vector measurement script (with vectors applied through the `add` intervention). Both graders are
reported: `lenient` (last \\boxed{} OR last number correct) and `boxed` (the paper's metric).
"""

from __future__ import annotations

import time

import torch

from mechsteer.sequences import SamplingSettings, pad_id, sample
from mechsteer.train.rewards import Completion, grade_completion


def accuracy(
    lm,
    problems: list[dict],
    prompt_ids: list[list[int]],
    settings: SamplingSettings,
    *,
    template: str = "qwen_math",
) -> dict:
    """Accuracy over `settings.samples` completions per problem (temperature 0 = greedy, one sample)."""
    seqs = sample(lm.model, prompt_ids, settings, pad_id=pad_id(lm.tokenizer), share_prefill=True)
    n = lenient = boxed = has_box = finished = 0
    length = 0
    for q in seqs:
        toks = list(q.generated_ids)
        text = q.text(lm.tokenizer)
        g = grade_completion(Completion(text, str(problems[q.prompt]["answer"]), tuple(toks), q.finished), template)
        n += 1
        lenient += g.boxed_correct or g.last_number_correct
        boxed += g.boxed_correct
        has_box += g.has_box
        finished += q.finished
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
    """{"greedy": {...}, "sampled": {...}, "seconds": s} on the given problems (see `accuracy`); `batch_size`
    counts rows (prompts x samples)."""
    from mechsteer.generation import model_sampling

    def settings(temperature: float, samples: int) -> SamplingSettings:
        return model_sampling(
            lm,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            samples=samples,
            seed=seed,
            batch_size=max(1, batch_size // samples),
        )

    t0 = time.perf_counter()
    out: dict = {}
    with torch.no_grad():
        if greedy:
            out["greedy"] = accuracy(lm, problems, prompt_ids, settings(0.0, 1), template=template)
        if samples:
            out["sampled"] = accuracy(lm, problems, prompt_ids, settings(temperature, samples), template=template)
            out["sampled"]["temperature"] = temperature
    out["seconds"] = time.perf_counter() - t0
    return out
