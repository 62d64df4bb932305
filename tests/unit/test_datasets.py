"""Tests for mechsteer.eval.datasets against excerpts of the local benchmark copies (the first 4 problems of
each, under tests/fixtures/data; the full copies are never committed)."""

from __future__ import annotations

import json

import pytest
from conftest import DATA_FIXTURES as DATA_DIR

from mechsteer.eval import datasets as ds
from mechsteer.eval.datasets import (
    BENCHMARKS,
    DatasetFormatError,
    DatasetUnavailableError,
    dataset_hash,
    load_benchmark,
)
from mechsteer.eval.grading import grade_boxed

EXCERPT_SIZE = 4

EXPECTED_SIZES = {
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "math500": 500,
    "minerva_math": 272,
    "olympiadbench": 675,
    "gsm8k": 1319,
}


def test_table_lists_the_seven_benchmarks():
    assert set(BENCHMARKS) == set(EXPECTED_SIZES)
    assert BENCHMARKS["gsm8k"].hub_id == "openai/gsm8k"
    assert BENCHMARKS["gsm8k"].configs == ("main",)
    assert BENCHMARKS["gsm8k"].split == "test"
    assert BENCHMARKS["aime25"].configs == ("AIME2025-I", "AIME2025-II")
    for name, bench in BENCHMARKS.items():
        assert bench.expected_size == EXPECTED_SIZES[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_local_copies_load_and_normalise(name):
    rows = load_benchmark(name, DATA_DIR)
    assert len(rows) == EXCERPT_SIZE
    for row in rows:
        assert set(row) == {"id", "problem", "answer"}
        assert isinstance(row["problem"], str) and row["problem"].strip()
        assert isinstance(row["answer"], str) and row["answer"].strip()
        assert "boxed" not in row["answer"]
    assert len({row["id"] for row in rows}) == len(rows)


def test_specific_answers():
    assert load_benchmark("gsm8k", DATA_DIR, limit=1)[0]["answer"] == "18"
    assert load_benchmark("amc23", DATA_DIR, limit=1)[0]["answer"] == "27.0"
    assert grade_boxed("\\boxed{27}", load_benchmark("amc23", DATA_DIR, limit=1)[0]["answer"])
    minerva = load_benchmark("minerva_math", DATA_DIR, limit=1)[0]
    assert minerva["answer"] == "1.6"
    olympiad = load_benchmark("olympiadbench", DATA_DIR, limit=2)
    assert olympiad[0]["answer"] == "2" and olympiad[0]["problem"].startswith("Xenia and Sergey")
    assert olympiad[1]["answer"] == "$\\frac{1}{2 n+2}$"


def test_limit_and_hash():
    three = load_benchmark("math500", DATA_DIR, limit=3)
    assert len(three) == 3
    assert three == load_benchmark("math500", DATA_DIR)[:3]
    assert dataset_hash(three) == dataset_hash(load_benchmark("math500", DATA_DIR, limit=3))
    assert dataset_hash(three) != dataset_hash(three[:2])
    assert dataset_hash(three) != dataset_hash(list(reversed(three)))


def test_dataset_hash_is_canonical():
    a = [{"id": "1", "problem": "p", "answer": "a"}]
    b = [{"answer": "a", "problem": "p", "id": "1"}]
    assert dataset_hash(a) == dataset_hash(b)
    assert len(dataset_hash(a)) == 64
    assert dataset_hash(a) != dataset_hash([{"id": "1", "problem": "p", "answer": "b"}])


def test_missing_local_file_names_the_path(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_benchmark("aime24", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "aime24" / "test.jsonl") in message
    assert "--data-dir" in message


def test_offline_hub_raises_with_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError) as info:
        load_benchmark("math500", None)
    message = str(info.value)
    assert "math500" in message and "HuggingFaceH4/MATH-500" in message
    assert "--data-dir" in message and "math500/test.jsonl" in message


def test_unreachable_hub_raises_with_fix(monkeypatch):
    """A network failure inside `datasets.load_dataset` becomes a DatasetUnavailableError."""
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("simulated: hub unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DatasetUnavailableError) as info:
        load_benchmark("gsm8k", None)
    assert "openai/gsm8k" in str(info.value) and "hub unreachable" in str(info.value)


def test_hub_rows_are_normalised(monkeypatch):
    """Hub column names (Problem/Answer, question) are handled and configs are concatenated."""
    import datasets

    calls = []

    def fake_load(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"question": f"q {config}", "answer": "1"}]

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = load_benchmark("aime25", None)
    assert calls == [
        ("opencompass/AIME2025", "AIME2025-I", "test"),
        ("opencompass/AIME2025", "AIME2025-II", "test"),
    ]
    assert [r["problem"] for r in rows] == ["q AIME2025-I", "q AIME2025-II"]


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("aime24", {"ID": "2024-I-1", "Problem": "P", "Answer": 204, "Solution": "S"}, ("2024-I-1", "P", "204")),
        ("amc23", {"id": 0, "problem": "P", "answer": 27.0}, ("0", "P", "27.0")),
        ("math500", {"problem": "P", "answer": "\\boxed{3}", "unique_id": "u"}, ("u", "P", "3")),
        ("minerva_math", {"problem": "P", "solution": "a \\boxed{1} b \\boxed{2.5}", "idx": 4}, ("4", "P", "2.5")),
        (
            "olympiadbench",
            {"id": 9, "context": "Ctx.", "question": "Q?", "final_answer": ["$x$", "$y$"]},
            ("9", "Ctx.\n\nQ?", "$x$"),
        ),
        ("olympiadbench", {"id": 9, "context": "", "question": "Q?", "final_answer": ["7"]}, ("9", "Q?", "7")),
        ("gsm8k", {"question": "Q", "answer": "work\n#### 1,234", "idx": 3}, ("3", "Q", "1234")),
    ],
)
def test_normalisers(name, raw, expected):
    row = BENCHMARKS[name].normalise(raw, 0)
    assert (row["id"], row["problem"], row["answer"]) == expected


def test_row_without_answer_is_a_format_error(tmp_path):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    (folder / "test.jsonl").write_text(json.dumps({"question": "Q", "answer": "no marker"}) + "\n")
    with pytest.raises(DatasetFormatError, match="no answer"):
        load_benchmark("gsm8k", tmp_path)


def test_bad_json_line_is_a_format_error(tmp_path):
    folder = tmp_path / "aime25"
    folder.mkdir()
    (folder / "test.jsonl").write_text('{"problem": "P", "answer": "1"}\n{broken\n')
    with pytest.raises(DatasetFormatError, match=":2:"):
        load_benchmark("aime25", tmp_path)


def test_unknown_benchmark():
    with pytest.raises(KeyError, match="gsm8k"):
        load_benchmark("nope", None)


def test_hub_offline_flag_parsing(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert ds.hub_offline() is False
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "TRUE")
    assert ds.hub_offline() is True
