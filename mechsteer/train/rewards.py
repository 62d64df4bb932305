"""Rewards: +1 for a correct completion, `negative` (the paper: -1) otherwise.

A reward function sees a `Completion` (text, gold answer, token ids, whether it stopped) and returns a
float. The three named rewards grade the text with `mechsteer.eval.grading`; tests and experiments can pass
any callable (e.g. "the first generated token is X") to the trainer instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """One sampled completion as the reward sees it: its text, the gold answer, its token ids and whether a stop
    token ended it."""

    text: str
    answer: str
    token_ids: tuple[int, ...]
    finished: bool


RewardFn = Callable[[Completion], float]


@dataclass(frozen=True)
class Graded:
    """Per-completion grading kept for metrics (reward plus both graders' verdicts)."""

    reward: float
    lenient: bool
    boxed: bool
    has_box: bool


def grade_completion(c: Completion, template: str = "qwen_math"):
    """Grade a completion with the evaluation's grader (`r1` grades `<answer>` tags, the rest \boxed{} or the last
    number)."""
    from mechsteer.eval.grading import grade

    return grade(c.text, c.answer, template="r1" if template == "r1" else "qwen_math")


def named_reward(name: str, negative: float = -1.0, template: str = "qwen_math") -> Callable[[Completion], Graded]:
    """A grader for `reward: boxed | last_number | boxed_or_last_number` returning reward + metrics."""
    if name not in ("boxed", "last_number", "boxed_or_last_number"):
        raise ValueError(f"unknown reward {name!r}")

    def fn(c: Completion) -> Graded:
        g = grade_completion(c, template)
        ok = {
            "boxed": g.boxed_correct,
            "last_number": g.last_number_correct,
            "boxed_or_last_number": g.boxed_correct or g.last_number_correct,
        }[name]
        return Graded(1.0 if ok else negative, g.boxed_correct or g.last_number_correct, g.boxed_correct, g.has_box)

    return fn


def custom_reward(fn: RewardFn) -> Callable[[Completion], Graded]:
    """Wrap a plain reward callable; the text graders' metrics are reported as 'reward > 0'."""

    def wrapped(c: Completion) -> Graded:
        r = float(fn(c))
        return Graded(r, r > 0, False, False)

    return wrapped
