"""Tests for the offline `mini` task: determinism, disjoint splits, correct gold answers."""

from __future__ import annotations

import re

import pytest

from mechsteer.eval.mini_task import (
    DEFAULT_MINI_VARIANT,
    MINI_VARIANTS,
    generate_mini,
    mini_pool,
)

# Independent re-parse of a problem: the operands and the operator, whatever the phrasing.
_PROBLEM = re.compile(r"(\d+)\s*(\+|\*|×|plus|times)\s*(\d+)")


def recompute(problem: str) -> int:
    match = _PROBLEM.search(problem)
    assert match, f"unparseable problem {problem!r}"
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    return a + b if op in ("+", "plus") else a * b


def _operand_key(problem: str) -> tuple[str, frozenset]:
    match = _PROBLEM.search(problem)
    op = "add" if match.group(2) in ("+", "plus") else "mul"
    return op, frozenset((int(match.group(1)), int(match.group(3))))


@pytest.mark.parametrize("variant", sorted(MINI_VARIANTS))
def test_answers_are_correct(variant):
    for split in ("train", "test"):
        for row in mini_pool(split, variant):
            assert set(row) == {"id", "problem", "answer"}
            assert row["answer"] == str(recompute(row["problem"])), row


@pytest.mark.parametrize("variant", sorted(MINI_VARIANTS))
def test_train_and_test_are_disjoint(variant):
    train, test = mini_pool("train", variant), mini_pool("test", variant)
    assert train and len(test) >= 64
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    # Not even an operand pair (in either order, in any phrasing) is shared.
    assert not {_operand_key(r["problem"]) for r in train} & {_operand_key(r["problem"]) for r in test}


def test_deterministic():
    assert generate_mini("test", 64) == generate_mini("test", 64)
    assert generate_mini("train", 500, seed=3) == generate_mini("train", 500, seed=3)
    assert mini_pool("test") == mini_pool("test")


def test_seed_changes_selection_not_partition():
    a, b = generate_mini("test", 64, seed=0), generate_mini("test", 64, seed=1)
    assert a != b
    pool = {r["problem"] for r in mini_pool("test")}
    assert {r["problem"] for r in a} <= pool and {r["problem"] for r in b} <= pool
    assert generate_mini("train", 50, seed=0) != generate_mini("train", 50, seed=1)


def test_test_problems_are_distinct_and_bounded():
    rows = generate_mini("test", 64)
    assert len(rows) == 64 and len({r["id"] for r in rows}) == 64
    with pytest.raises(ValueError, match="test problems"):
        generate_mini("test", len(mini_pool("test")) + 1)


def test_train_cycles_through_the_pool_evenly():
    pool = mini_pool("train")
    rows = generate_mini("train", 2 * len(pool) + 5)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["id"]] = counts.get(r["id"], 0) + 1
    assert set(counts) == {r["id"] for r in pool}
    assert sorted(set(counts.values())) in ([2, 3], [2])


def test_default_variant_mixes_operations_and_phrasings():
    problems = [r["problem"] for r in mini_pool("test", DEFAULT_MINI_VARIANT)]
    assert any("+" in p for p in problems) and any("*" in p for p in problems)
    assert any(p.startswith("Calculate") for p in problems) and any(p.startswith("What is") for p in problems)


def test_returned_rows_are_copies():
    rows = generate_mini("test", 3)
    rows[0]["answer"] = "tampered"
    assert generate_mini("test", 3)[0]["answer"] != "tampered"


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_mini("validation", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        generate_mini("train", -1)
    with pytest.raises(KeyError, match="arith1"):
        generate_mini("train", 1, variant="nope")
    assert generate_mini("train", 0) == []
