"""mechsteer's lm-eval task definitions load every local benchmark copy as it is (excerpts of each under
tests/fixtures/data), build the paper's prompts through lm-eval (plain and chat), and grade through lm-eval's
`process_results` with mechsteer's grader."""

from __future__ import annotations

from functools import partial

import pytest
from conftest import DATA_FIXTURES

EXPECTED = {"aime24": 4, "aime25": 4, "amc23": 4, "math500": 4, "minerva_math": 4, "olympiadbench": 4, "gsm8k": 4}
"""Problems in each fixture excerpt (the full local copies hold 30/30/40/500/272/675/1319)."""


def _count_chars(text: str) -> int:
    return len(text)


def lm_eval_task(
    task: str, data_dir, *, chat: bool = False, samples: int = 1, limit: int | None = None, protocol: str = "greedy"
):
    """The lm-eval Task object lm-eval builds from mechsteer's task dict."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from mechsteer.eval.lm_eval_tasks import TaskSettings, build_task_config, lm_eval_task_name, load_problems

    rows = load_problems(task, data_dir, limit)
    settings = TaskSettings(task=task, protocol=protocol, samples=samples, max_gen_toks=16, chat=chat)
    cfg = build_task_config(settings, rows, _count_chars)
    return get_task_dict([cfg], TaskManager(include_defaults=False))[lm_eval_task_name(task)]


@pytest.mark.parametrize("task", list(EXPECTED))
def test_local_benchmark_loads_through_lm_eval(task):
    from mechsteer.eval.templates import plain_prompt

    t = lm_eval_task(task, DATA_FIXTURES)
    docs = list(t.test_docs())
    assert len(docs) == EXPECTED[task]
    assert all(d["problem"].strip() and d["answer"].strip() for d in docs)
    assert len({d["id"] for d in docs}) == len(docs), "problem ids must be unique"
    # lm-eval builds the paper's plain prompt (models without a chat template) and the right request.
    t.build_all_requests(limit=2)
    for inst in t.instances:
        context, gen_kwargs = inst.args
        assert context == plain_prompt(inst.doc["problem"], "qwen_math")
        assert gen_kwargs["until"] == [] and gen_kwargs["do_sample"] is False
    # Grading goes through lm-eval's process_results: the gold answer, boxed, is correct; no box is wrong.
    doc = docs[0]
    right = t.process_results(doc, [[f"So the answer is \\boxed{{{doc['answer']}}}."]])
    assert right["acc_boxed"] == 1.0 and right["boxed_rate"] == 1.0
    unboxed = t.process_results(doc, [[f"So the answer is {doc['answer']}"]])
    assert unboxed["acc_boxed"] == 0.0 and unboxed["boxed_rate"] == 0.0


def test_known_answer_formats():
    from mechsteer.eval.lm_eval_tasks import load_problems

    amc = load_problems("amc23", DATA_FIXTURES, 1)[0]
    assert amc["answer"] == "27.0"  # AMC gold answers are floats; both graders accept "27"
    gsm = load_problems("gsm8k", DATA_FIXTURES, 1)[0]
    assert gsm["answer"] == "18"  # text after "#### "
    minerva = load_problems("minerva_math", DATA_FIXTURES, 1)[0]
    assert "boxed" not in minerva["answer"]  # last \boxed{} of the solution, unwrapped


def test_limit_keeps_the_first_problems():
    from mechsteer.eval.lm_eval_tasks import load_problems

    full = load_problems("math500", DATA_FIXTURES, None)
    assert len(full) == 4 and load_problems("math500", DATA_FIXTURES, 2) == full[:2]


def test_mini_task_loads_without_any_data():
    t = lm_eval_task("mini", None, limit=10)
    docs = list(t.test_docs())
    assert len(docs) == 10 and all(d["answer"].lstrip("-").isdigit() for d in docs)


def test_chat_prompt_is_rendered_by_lm_eval_with_the_papers_system_prompt():
    from tiny_tokenizer import make_tiny_tokenizer

    from mechsteer.eval.templates import QWEN_MATH_SYSTEM, build_prompt

    tok = make_tiny_tokenizer()
    t = lm_eval_task("mini", None, chat=True, limit=3)
    render = partial(tok.apply_chat_template, tokenize=False)
    t.build_all_requests(
        limit=3,
        apply_chat_template=True,
        system_instruction=QWEN_MATH_SYSTEM,
        fewshot_as_multiturn=True,
        chat_template=render,
    )
    assert len(t.instances) == 3
    for inst in t.instances:
        assert inst.args[0] == build_prompt(tok, inst.doc["problem"])


def test_repeats_are_samples_per_problem_and_protocol_sets_sampling():
    t = lm_eval_task("mini", None, samples=4, limit=2, protocol="paper")
    t.build_all_requests(limit=2)
    assert [inst.repeats for inst in t.instances] == [4, 4]
    kwargs = t.instances[0].args[1]
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 1.0 and kwargs["top_p"] == 1.0
    assert kwargs["top_k"] == 0 and kwargs["until"] == []


def test_r1_template_is_refused_with_a_chat_template():
    from mechsteer.eval.lm_eval_tasks import TaskSettings, build_task_config

    with pytest.raises(ValueError, match="r1"):
        build_task_config(TaskSettings("mini", "greedy", 1, 8, chat=True, template="r1"), [], _count_chars)
