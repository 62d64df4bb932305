"""Answer extraction and grading.

Two graders live here, and `grade` computes both:

* **boxed** (the paper's grader, `trainer.is_answer_present` in the authors' code): take the last
  `\\boxed{...}` / `\\fbox{...}` of the completion with brace matching, `math_verify.parse` it and the gold
  string `"\\boxed{" + gold + "}"`, and `math_verify.verify(gold, pred)`. No box means wrong. This is the
  strict metric every paper number uses.
* **last number** (lenient): the last integer or decimal in the completion must equal the gold answer
  numerically ("27" matches gold "27.0"). The embedded SmolLM2-135M model almost never writes `\\boxed{}`,
  so on CPU the `mini` profile reports this metric beside the strict one; otherwise every accuracy would be 0.

Nothing here imports torch; `math_verify` (and through it sympy) is imported lazily on first use so that
importing this module stays cheap.

math-verify enforces its time limits with `signal.alarm`, which only works on the main thread (it raises
`ValueError` elsewhere). On the main thread math-verify runs here with its limits. lm-eval and thread pools
may call graders from worker threads; there math-verify runs in a helper process (on that process's main
thread, limits on) and the caller waits at most `OFF_THREAD_LIMIT_S`, so a pathological answer cannot hang a
grading worker: an answer that overruns counts as not verified (`mechsteer.eval.helper_process`).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from decimal import Decimal

# Seconds math-verify may spend parsing / verifying one expression (its own default is 5).
MATH_VERIFY_TIMEOUT_S = 5
# The authors retried the gold parse up to 5 times (a parse that times out returns an empty list).
GOLD_PARSE_ATTEMPTS = 5
# Off the main thread: wall-clock seconds one verification may take in the helper process (every parse and the
# verify may each use their own limit inside it), after which the answer counts as not verified.
OFF_THREAD_LIMIT_S = (GOLD_PARSE_ATTEMPTS + 2) * MATH_VERIFY_TIMEOUT_S
# Helpers that may die on one answer (a crash, garbage on the protocol) before it counts as not verified: a
# second try tells an unrelated loss of the helper from an answer that kills whatever grades it.
HELPER_ATTEMPTS = 2
# What the helper process runs ("module:function"); tests point it at deliberately slow stand-ins.
VERIFY_IN_HELPER = "mechsteer.eval.grading:verify_in_helper"

# `\boxed` or `\fbox` as a whole command name (not `\boxedfoo`).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# The content of an `<answer>...</answer>` block (the paper's `r1` template answers there).
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# A number: thousands-grouped ("1,234,567.5"), plain ("1234", "3.5") or dot-leading (".5"). A minus sign
# counts when it is glued to the digits and does not follow a word character or a closing bracket
# (so "9-3" yields 9 and 3, but "is -4" yields -4). A trailing sentence period is never part of a number.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)


# ---------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the `}` closing the `{` at `open_idx`, or None when the braces never balance."""
    depth = 0
    for i in range(open_idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _single_token_box(text: str, start: int, after: int) -> str | None:
    """`\\boxed 5` form (as in the MATH reference code): the command, a space, then one token up to `$`/space."""
    rest = text[after:]
    stripped = rest.lstrip(" ")
    if stripped == rest:  # no space after the command: not the single-token form
        return None
    token = re.match(r"[^\s$]+", stripped)
    if token is None:
        return None
    command = text[start:after]
    return f"{command} {token.group(0)}"


def last_boxed_only_string(text: str | None) -> str | None:
    """The last `\\boxed{...}` / `\\fbox{...}` in `text`, whole and brace-matched, or None.

    Nested braces are matched (`\\boxed{\\frac{1}{2}}` is returned entire). The single-token form
    `\\boxed 5` returns `"\\boxed 5"`. Only the LAST box command counts: if it is unterminated (a truncated
    generation) the result is None even when an earlier box is complete, exactly like the reference grader.
    Unlike the MATH reference code, which prefers any `\\boxed` over a later `\\fbox`, the rightmost of the
    two commands wins.
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    start, after = matches[-1].start(), matches[-1].end()
    brace = after
    while brace < len(text) and text[brace] == " ":
        brace += 1
    if brace < len(text) and text[brace] == "{":
        close = _matching_brace(text, brace)
        return None if close is None else text[start : close + 1]
    return _single_token_box(text, start, after)


def remove_boxed(s: str) -> str:
    """The content of a string returned by `last_boxed_only_string` (`\\boxed{x}` -> `x`, `\\boxed 5` -> `5`).

    Raises ValueError when `s` is not a single box command, because silently returning the input would
    turn a caller bug into a wrong answer.
    """
    match = _BOX_COMMAND.match(s) if isinstance(s, str) else None
    if match is None:
        raise ValueError(f"not a \\boxed{{...}} / \\fbox{{...}} string: {s!r}")
    rest = s[match.end() :]
    body = rest.lstrip(" ")
    if body.startswith("{") and body.endswith("}") and _matching_brace(body, 0) == len(body) - 1:
        return body[1:-1]
    if body and body != rest and not body.startswith("{"):
        return body
    raise ValueError(f"malformed box string: {s!r}")


def extract_boxed_answer(text: str | None) -> str | None:
    """Content of the last box in `text`, or None when there is no complete box."""
    box = last_boxed_only_string(text)
    return None if box is None else remove_boxed(box)


def last_answer_tag(text: str | None) -> str | None:
    """Content of the last `<answer>...</answer>` block (the paper's `r1` template), or None."""
    if not isinstance(text, str):
        return None
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def last_number(text: str | None) -> str | None:
    """The last integer or decimal in `text`, normalised (thousands commas removed), or None.

    "1,234" -> "1234", "the answer is -4." -> "-4", "3.50" -> "3.50", "x = .5" -> ".5".
    """
    if not isinstance(text, str):
        return None
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _exact_value(value: object) -> Decimal | None:
    """Exact value of a plain number string ("27", "27.0", "-1,234.5", "$18"), or None if not a number.

    A `Decimal` built from a string is exact at any length and compares exactly ("27" == "27.0"); unlike
    `int` or `Fraction` it is not subject to Python's 4300-digit limit on int/str conversion, so a degenerate
    completion of thousands of digits is compared, not raised on."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip().strip("$").strip().replace(",", "")
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", text):
        return None
    return Decimal(text)


# ---------------------------------------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------------------------------------


def _parse_gold(gold: str, timeout: int | None) -> list:
    """`math_verify.parse("\\boxed{gold}")`, retried while it comes back empty (as the authors did)."""
    import math_verify

    parsed: list = []
    for _ in range(GOLD_PARSE_ATTEMPTS):
        parsed = math_verify.parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
        if parsed:
            break
    return parsed


def canonical_box(box: str) -> str:
    """`\\fbox{x}` / `\\boxed x` -> `\\boxed{x}`: math-verify only anchors on `\\boxed{...}`.

    The authors passed the raw string to `math_verify.parse`, which does not recognise `\\fbox`; rewriting
    it lets an `\\fbox` answer count, which is what the brace-matching extractor intends.
    """
    return "\\boxed{" + remove_boxed(box) + "}"


def verify_box(box: str, gold: object) -> bool:
    """math-verify equivalence of a box string (e.g. `\\boxed{0.5}`) and a gold answer; never raises and,
    off the main thread, never takes longer than `OFF_THREAD_LIMIT_S` (see the module docstring)."""
    if threading.current_thread() is threading.main_thread():
        return _verify(box, str(gold), MATH_VERIFY_TIMEOUT_S)
    from mechsteer.eval.helper_process import HelperFailed, HelperUnavailable, helper_pool

    for _attempt in range(HELPER_ATTEMPTS):
        try:
            return bool(helper_pool().call(VERIFY_IN_HELPER, [box, str(gold)], OFF_THREAD_LIMIT_S))
        except TimeoutError:
            return False  # overran: not verified
        except HelperUnavailable:
            return _verify(box, str(gold), None)  # no helper process here: grade in this thread, unbounded
        except HelperFailed:
            continue  # the helper died under this answer: once more in a fresh one, then not verified
    return False


def verify_in_helper(box: str, gold: str) -> bool:
    """`verify_box` as the helper process runs it: on its main thread, with math-verify's own limits."""
    return _verify(box, gold, MATH_VERIFY_TIMEOUT_S)


def _verify(box: str, gold: str, timeout: int | None) -> bool:
    try:
        import math_verify

        gold_parsed = _parse_gold(gold, timeout)
        pred_parsed = math_verify.parse(canonical_box(box), parsing_timeout=timeout)
        return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a grader must score weird input as wrong, never crash an eval
        return False


def _prediction_box(completion: str | None, template: str) -> str | None:
    """The box string the grader compares: the last box, or for `r1` the last `<answer>` wrapped in a box."""
    if template == "r1":
        tagged = last_answer_tag(completion)
        return None if tagged is None else "\\boxed{" + tagged + "}"
    return last_boxed_only_string(completion)


def grade_boxed(completion: str | None, gold: object, *, template: str = "qwen_math") -> bool:
    """The paper's strict grader: is the last `\\boxed{}` of `completion` math-equivalent to `gold`?

    `template="r1"` grades the last `<answer>...</answer>` instead, as the authors did for that template.
    No box (or no answer tag) means False. Never raises.
    """
    try:
        box = _prediction_box(completion, template)
    except Exception:  # noqa: BLE001 - extraction trouble means no box, never a crash
        return False
    if box is None:
        return False
    return verify_box(box, gold)


def grade_last_number(completion: str | None, gold: object) -> bool:
    """Lenient grader: does the last number in `completion` equal `gold` numerically? Never raises.

    A gold answer that is not a plain number (e.g. `\\frac{1}{2}`) can never match this way.
    """
    try:
        want = _exact_value(gold)
        got = _exact_value(last_number(completion))
    except Exception:  # noqa: BLE001 - a grader must score weird input as wrong, never crash an eval
        return False
    return want is not None and got is not None and want == got


@dataclass(frozen=True)
class GradeResult:
    """Both metrics for one completion, plus what was extracted (for logging and debugging)."""

    boxed_correct: bool
    last_number_correct: bool
    has_box: bool
    extracted_boxed: str | None
    extracted_number: str | None

    @property
    def lenient_correct(self) -> bool:
        """Boxed-or-last-number: right if either the strict or the last-number grader says so."""
        return self.boxed_correct or self.last_number_correct


def grade(completion: str | None, gold: object, *, template: str = "qwen_math") -> GradeResult:
    """Grade one completion against a gold answer with both graders. Never raises."""
    try:
        box = _prediction_box(completion, template)
        content = None if box is None else remove_boxed(box)
    except Exception:  # noqa: BLE001 - extraction trouble means no box, never a crash
        box, content = None, None
    return GradeResult(
        boxed_correct=False if box is None else verify_box(box, gold),
        last_number_correct=grade_last_number(completion, gold),
        has_box=box is not None,
        extracted_boxed=content,
        extracted_number=last_number(completion),
    )
