"""`generate` readout: completions under a condition, graded when the prompts come from a task.

Metrics: `acc_boxed` (the paper's grader: last \\boxed{} verified with math-verify), `acc_lenient` (boxed, or
else the last number in the text; the embedded 135M model rarely boxes), `boxed_rate`, `truncated_rate`,
mean generation length (all / correct / incorrect, as the paper's code logs), and the share of
completions opening with each of the most common first tokens (the paper's "To" effect is measured here,
not assumed)."""

from __future__ import annotations

from collections import Counter
from statistics import mean

from mechsteer.generation import render_prompts, sample_texts, spec_sampling, stop_info
from mechsteer.measurement import MeasurementResult, MeasurementTask
from mechsteer.readouts.prompts import load_problems


def _mean(xs) -> float:
    xs = list(xs)
    return float(mean(xs)) if xs else float("nan")


def run_generate(task: MeasurementTask) -> MeasurementResult:
    """Sample completions under the condition and record them, graded (boxed and lenient) when the prompts come from
    a task."""
    from mechsteer.eval.grading import grade

    o = task.spec
    problems = load_problems(o)
    prompts = render_prompts(task.lm, [p["problem"] for p in problems], o.template, task.ctx.prompt_suffix)
    task.progress(0, len(prompts))
    settings = spec_sampling(task.lm, o, task.seed)
    seqs = sample_texts(task.lm, task.ctx, prompts, settings, on_batch=lambda n: task.progress(n, None))
    tok = task.lm.tokenizer
    samples, graded = [], []
    for q in seqs:
        prob, text = problems[q.prompt], q.text(tok)
        rec = {
            "id": prob["id"],
            "sample": q.sample,
            "problem": prob["problem"],
            "answer": prob.get("answer"),
            "completion": text,
            "n_tokens": q.n_generated,
            "finished": q.finished,
            "first_token": q.first_token(tok),
        }
        if prob.get("answer") is not None:
            g = grade(text, str(prob["answer"]))
            rec.update(
                boxed_correct=g.boxed_correct,
                lenient_correct=g.boxed_correct or g.last_number_correct,
                has_box=g.has_box,
                extracted=g.extracted_boxed or g.extracted_number,
            )
            graded.append(rec)
        samples.append(rec)
    metrics: dict[str, float] = {
        "n": float(len(samples)),
        "mean_len": _mean(s["n_tokens"] for s in samples),
        "truncated_rate": _mean(not s["finished"] for s in samples),
    }
    if graded:
        metrics.update(
            acc_boxed=_mean(s["boxed_correct"] for s in graded),
            acc_lenient=_mean(s["lenient_correct"] for s in graded),
            boxed_rate=_mean(s["has_box"] for s in graded),
            mean_len_correct=_mean(s["n_tokens"] for s in graded if s["lenient_correct"]),
            mean_len_incorrect=_mean(s["n_tokens"] for s in graded if not s["lenient_correct"]),
        )
    firsts = Counter(s["first_token"] for s in samples)
    info = {
        "first_tokens": dict(firsts.most_common(10)),
        "prompt_example": prompts[0] if prompts else "",
        **stop_info(tok, list(settings.stop_ids)),
    }
    return MeasurementResult(metrics, samples, info=info)
