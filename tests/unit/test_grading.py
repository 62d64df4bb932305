"""Tests for mechsteer.eval.grading: box extraction, math-verify equivalences, the last-number grader."""

from __future__ import annotations

import threading

import pytest

from mechsteer.eval import grading
from mechsteer.eval.grading import (
    GradeResult,
    extract_boxed_answer,
    grade,
    grade_boxed,
    grade_last_number,
    last_answer_tag,
    last_boxed_only_string,
    last_number,
    remove_boxed,
)

# --------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{5}.", "\\boxed{5}"),
        ("\\boxed{\\frac{1}{2}}", "\\boxed{\\frac{1}{2}}"),
        ("x \\boxed{\\sqrt{\\frac{a}{b^{2}}}} y", "\\boxed{\\sqrt{\\frac{a}{b^{2}}}}"),
        ("first \\boxed{1}, then \\boxed{2}", "\\boxed{2}"),
        ("\\fbox{7}", "\\fbox{7}"),
        ("\\boxed{1} and finally \\fbox{3}", "\\fbox{3}"),
        ("\\fbox{3} and finally \\boxed{1}", "\\boxed{1}"),
        ("$\\boxed 5$", "\\boxed 5"),
        ("answer: \\boxed 42 done", "\\boxed 42"),
        ("spaced \\boxed {7}", "\\boxed {7}"),
        ("no box here, 42", None),
        ("", None),
        (None, None),
        ("truncated \\boxed{12", None),
        ("complete \\boxed{1} then truncated \\boxed{\\frac{2}{", None),
        ("\\boxedfoo{3}", None),
    ],
)
def test_last_boxed_only_string(text, expected):
    assert last_boxed_only_string(text) == expected


@pytest.mark.parametrize(
    ("box", "content"),
    [
        ("\\boxed{5}", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed 5", "5"),
        ("\\boxed {7}", "7"),
        ("\\boxed{}", ""),
    ],
)
def test_remove_boxed(box, content):
    assert remove_boxed(box) == content


@pytest.mark.parametrize("bad", ["5", "\\boxed{5", "\\boxed{1}{2}", "boxed{3}"])
def test_remove_boxed_rejects_non_boxes(bad):
    with pytest.raises(ValueError):
        remove_boxed(bad)


def test_extract_boxed_answer_and_answer_tag():
    assert extract_boxed_answer("a \\boxed{\\{1,2\\}} b") == "\\{1,2\\}"
    assert extract_boxed_answer("nothing") is None
    assert last_answer_tag("<answer> 3 </answer> then <answer>\n4\n</answer>") == "4"
    assert last_answer_tag("<answer>unterminated") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 12.", "12"),
        ("It costs 1,234 dollars", "1234"),
        ("$1,000,000 in total", "1000000"),
        ("so x = -4.", "-4"),
        ("9-3=6", "6"),
        ("9-3", "3"),
        ("pi is about 3.14.", "3.14"),
        ("half is .5", ".5"),
        ("27.0", "27.0"),
        ("1, 2, 3", "3"),
        ("no digits", None),
        ("", None),
        (None, None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


# ------------------------------------------------------------------------------------------ boxed grading


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{\\frac12}", "\\frac{1}{2}"),
        ("\\boxed{[1,3)}", "[1,3)"),
        ("\\boxed{(-\\infty, 2]}", "(-\\infty,2]"),
        ("\\boxed{\\sqrt{2}}", "\\sqrt2"),
        ("\\boxed{2^{1/2}}", "\\sqrt{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{5 \\text{ km}}", "5"),
        ("\\boxed{30^\\circ}", "30"),
        ("\\boxed{\\frac{1}{2n+2}}", "$\\frac{1}{2 n+2}$"),  # OlympiadBench golds keep their $...$
        ("\\boxed{27}", "27.0"),  # AMC golds are floats
        ("\\boxed{27.0}", "27"),
        ("\\boxed{1,234}", "1234"),
        ("\\fbox{7}", "7"),
        ("the answer is $\\boxed 5$", "5"),
        ("wrong \\boxed{4}, corrected: \\boxed{5}", "5"),
    ],
)
def test_grade_boxed_equivalences(completion, gold):
    assert grade_boxed(completion, gold) is True


@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("\\boxed{(1,3]}", "[1,3)"),
        ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}"),
        ("\\boxed{26}", "27.0"),
        ("\\boxed{5}, corrected: \\boxed{4}", "5"),
        ("\\boxed{}", "3"),
        ("the answer is 5", "5"),  # no box => wrong, however right the number
        ("", "5"),
        (None, "5"),
    ],
)
def test_grade_boxed_rejections(completion, gold):
    assert grade_boxed(completion, gold) is False


@pytest.mark.parametrize(
    "completion",
    ["\\boxed{\\frac{", "\\boxed{}}}}{{{", "\\boxed{\\left(}", "\\boxed{" + "(" * 200 + "}", "\x00\\boxed{\x00}"],
)
def test_grade_boxed_never_raises(completion, monkeypatch):
    # A 1 s limit keeps the suite fast while still exercising math-verify's timeout path on deep nesting.
    monkeypatch.setattr(grading, "MATH_VERIFY_TIMEOUT_S", 1)
    assert grade_boxed(completion, "1") in (True, False)
    assert grade_boxed("\\boxed{1}", "\\frac{{{") in (True, False)


def test_grade_boxed_float_gold_object():
    assert grade_boxed("\\boxed{27}", 27.0) is True


def test_grade_boxed_r1_template_uses_answer_tag():
    text = "<think>2+2</think> <answer>4</answer>"
    assert grade_boxed(text, "4", template="r1") is True
    assert grade_boxed(text, "4") is False  # qwen_math needs a box
    assert grade_boxed("\\boxed{4}", "4", template="r1") is False


def test_grade_boxed_off_main_thread():
    """math-verify's signal-based timeouts fail off the main thread; the grader must still grade there."""
    results: list[bool] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            [grade_boxed("so \\boxed{\\frac{1}{2}}", "0.5"), grade_boxed("\\boxed{3}", "0.5")]
        )
    )
    worker.start()
    worker.join(timeout=60)
    assert results == [True, False]


# ------------------------------------------------------------------------------------ last-number grading


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("so it is 27", "27.0", True),
        ("so it is 27.0", "27", True),
        ("so it is 27.5", "27", False),
        ("she makes $18 a day.", "18", True),
        ("total 1,234 apples", "1234", True),
        ("total 1234 apples", "1,234", True),
        ("the result is -3", "-3", True),
        ("3 + 4 = 7, and 7 + 1 = 8", "7", False),  # only the LAST number counts
        ("no number", "5", False),
        ("2", "\\frac{1}{2}", False),  # non-numeric gold never matches this way
        ("", "0", False),
    ],
)
def test_grade_last_number(completion, gold, expected):
    assert grade_last_number(completion, gold) is expected


# ------------------------------------------------------------------------------------------------- grade


def test_grade_reports_both_metrics():
    result = grade("First 3 + 4 = 7. So \\boxed{7}", "7")
    assert isinstance(result, GradeResult)
    assert result == GradeResult(True, True, True, "7", "7")
    assert result.lenient_correct


def test_grade_lenient_without_box():
    result = grade("3 + 4 = 7", "7")
    assert (result.boxed_correct, result.last_number_correct, result.has_box) == (False, True, False)
    assert result.extracted_boxed is None and result.extracted_number == "7"
    assert result.lenient_correct


def test_grade_box_right_number_wrong():
    result = grade("\\boxed{\\frac{1}{2}} which is 0.5 or 1/2", "\\frac{1}{2}")
    assert result.boxed_correct and not result.last_number_correct
    assert result.extracted_boxed == "\\frac{1}{2}" and result.extracted_number == "2"


def test_grade_all_wrong():
    result = grade("I think 8", "7")
    assert not result.boxed_correct and not result.last_number_correct and not result.lenient_correct
