"""A degenerate completion (a greedy loop of digits, braces nested thousands deep, a tower of exponents) must
grade as wrong through every grader entry point, never raise: a raise kills the evaluation cell on every
re-run and the RLOO step with it. Numbers past Python's 4300-digit int/str conversion limit are compared
exactly (a long right answer is still right)."""

from __future__ import annotations

import functools
import sys

import pytest

from mechsteer.eval import grading
from mechsteer.eval.grading import grade, grade_boxed, grade_last_number
from mechsteer.eval.lm_eval_tasks import _process_results
from mechsteer.train.rewards import Completion, named_reward

OVER_INT_LIMIT = sys.get_int_max_str_digits() + 700  # digits past the int/str conversion limit (4300 by default)

DEGENERATE = {
    "digits": "the answer is " + "9" * OVER_INT_LIMIT,
    "boxed digits": "so \\boxed{" + "9" * OVER_INT_LIMIT + "}",
    "long decimal": "x = 0." + "3" * OVER_INT_LIMIT,
    "negative digits": "is -" + "1" * OVER_INT_LIMIT + ".",
    "grouped digits": "1" + ",000" * (OVER_INT_LIMIT // 3),
    "nested braces": "\\boxed{" + "{" * 800 + "1" + "}" * 800 + "}",
    "unbalanced braces": "\\boxed{" + "{" * 100_000,
    "python tower": "\\boxed{9**9**9}",
    "latex tower": "\\boxed{9^{9^{9^{9}}}}",
    "nested roots": "\\boxed{" + "\\sqrt{" * 400 + "2" + "}" * 400 + "}",
    "division by zero": "\\boxed{\\frac{1}{0}}",
    "control characters": "\\boxed{\x00\x1b[2J\ud800}",
}
GOLDS = ["42", "8" * OVER_INT_LIMIT]  # neither is the right answer to any completion above


@pytest.fixture(autouse=True)
def short_math_verify_limit(monkeypatch):
    """math-verify's own time limit is what stops the towers; 1 s keeps this file quick, the path is the same.

    Every entry point below ends in the same math-verify call on the same (box, gold); it runs once per pair
    (the real `_verify`, memoised for this file), so a box that takes the whole limit costs 1 s, not 1 s per
    entry point. The entry points still run their own extraction and scoring and are checked one by one."""
    monkeypatch.setattr(grading, "MATH_VERIFY_TIMEOUT_S", 1)
    monkeypatch.setattr(grading, "_verify", functools.cache(grading._verify))


def _every_entry_point(completion: str, gold: str) -> dict[str, bool]:
    """The verdict of each way a completion is graded: the graders, the RLOO rewards, lm-eval's process_results."""
    verdicts = {
        "grade_boxed": grade_boxed(completion, gold),
        "grade_last_number": grade_last_number(completion, gold),
    }
    g = grade(completion, gold)
    verdicts |= {"grade.boxed": g.boxed_correct, "grade.lenient": g.lenient_correct}
    for name in ("boxed", "last_number", "boxed_or_last_number"):
        graded = named_reward(name)(Completion(completion, gold, (1, 2, 3), False))
        verdicts[f"reward {name}"] = graded.reward > 0
    scored = _process_results({"answer": gold}, [[completion]], template="qwen_math", count_tokens=len)
    verdicts |= {"lm-eval acc_boxed": scored["acc_boxed"] > 0, "lm-eval acc_lenient": scored["acc_lenient"] > 0}
    return verdicts


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_a_degenerate_completion_grades_as_wrong_everywhere(name):
    completion = DEGENERATE[name]
    for gold in GOLDS:
        verdicts = _every_entry_point(completion, gold)
        assert not any(verdicts.values()), (name, gold[:10], verdicts)


def test_a_right_answer_past_the_int_digit_limit_is_still_right():
    gold = "9" * OVER_INT_LIMIT
    assert grade_last_number("the answer is " + gold, gold + ".000")
    assert grade_last_number("so " + gold + ".", gold)
    assert not grade_last_number("so " + gold[:-1] + "8", gold)  # one digit off
    g = grade("thus " + gold, gold)
    assert g.last_number_correct and g.lenient_correct and g.extracted_number == gold
    reward = named_reward("last_number")(Completion("thus " + gold, gold, (1,), True))
    assert reward.reward == 1.0


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [("27", "27.0", True), ("27.", "27", True), ("-0", "0", True), ("x .5", "0.50", True), ("1,234", "1234", True)],
)
def test_the_exact_comparison_keeps_its_equivalences(completion, gold, expected):
    assert grade_last_number(completion, gold) is expected
