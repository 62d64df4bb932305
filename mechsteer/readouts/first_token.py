"""`first_token` readout: the next-token distribution at the end of the prompt, i.e. of the first generated
token. Records the top-k tokens per prompt and the probability of tracked tokens ("To", "Step"): the
paper's last-layer vector acts as a token-substitution bias on exactly this position. The report shows the
shift of these probabilities against the unsteered baseline."""

from __future__ import annotations

import torch

from mechsteer.errors import MechsteerError
from mechsteer.generation import render_prompts, tokenize
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.prompts import load_problems


def tracked_token_ids(tokenizer, strings: list[str]) -> dict[str, int]:
    """The id of each tracked string; a string that is not exactly one token is a located error."""
    out = {}
    for s in strings:
        ids = tokenizer.encode(s, add_special_tokens=False)
        if len(ids) != 1:
            raise MechsteerError(
                f"tracked token {s!r} encodes to {len(ids)} tokens {ids}; first_token.track needs single tokens",
                hint="try the word with or without a leading space",
            )
        out[s] = ids[0]
    return out


@torch.no_grad()
def run_first_token(task: MeasurementTask) -> MeasurementResult:
    """Record the first generated token's distribution at the end of each prompt under the condition: top-k tokens,
    entropy and the tracked tokens' probabilities."""
    o, lm = task.spec, task.lm
    problems = load_problems(o)
    prompts = render_prompts(lm, [p["problem"] for p in problems], o.template, task.ctx.prompt_suffix)
    tracked = tracked_token_ids(lm.tokenizer, o.track)
    task.progress(0, len(prompts))
    samples = []
    bs = o.batch_size
    for start in range(0, len(prompts), bs):
        batch = prompts[start : start + bs]
        enc = tokenize(lm, batch)
        task.ctx.begin(enc["attention_mask"].sum(dim=1))  # every position is prompt
        logits = lm.model(**enc).logits[:, -1, :].float()  # left padding: the last column is the next token
        logp = torch.log_softmax(logits, dim=-1)
        probs = logp.exp()
        top = probs.topk(o.top_k, dim=-1)
        entropy = -(probs * logp).sum(-1)
        for r in range(len(batch)):
            prob = problems[start + r]
            samples.append(
                {
                    "id": prob["id"],
                    "top": [[lm.tokenizer.decode([int(t)]), float(p)] for p, t in zip(top.values[r], top.indices[r])],
                    "top1_id": int(top.indices[r, 0]),
                    "entropy": float(entropy[r]),
                    "tracked": {s: float(probs[r, tid]) for s, tid in tracked.items()},
                }
            )
        task.progress(len(batch), None)
    metrics = {"n": float(len(samples)), "entropy": sum(s["entropy"] for s in samples) / max(len(samples), 1)}
    for s in tracked:
        metrics[f"p({s})"] = sum(x["tracked"][s] for x in samples) / max(len(samples), 1)
        metrics[f"top1=={s}"] = sum(x["top1_id"] == tracked[s] for x in samples) / max(len(samples), 1)
    return MeasurementResult(metrics, samples)
