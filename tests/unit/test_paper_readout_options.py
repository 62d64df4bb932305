"""Readout options the paper's procedures need, against hand computations: Diff-Diff against the sample's or the
dataset's mean shift (finding 5), token categories of the token shift (Figure 6's "process words and structure
symbols"), DeepScaleR training prompts drawn as `datasets` shuffles them, and only the samples that ended with
a stop token (finding 6)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mechsteer.readouts import persistence as pe
from mechsteer.readouts import token_shift as ts

# ------------------------------------------------------------------------------------------- Diff-Diff


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_diff_diff_against_the_sample_mean_and_the_dataset_mean_by_hand():
    vectors = torch.zeros(2, 2)
    s1 = [[1.0, 0.0], [1.0, 2.0], [0.0, 0.0]]  # a zero shift is left out (its cosine is undefined)
    s2 = [[0.0, 3.0], [-1.0, 1.0], [9.0, 9.0]]  # the last position is masked out
    d = torch.tensor([s1, s2])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    table = {}
    for variant in ("sample", "dataset"):
        acc = pe.PersistenceAccumulator(vectors, diff_diff_mean=variant)
        acc.update(0, 1, d[:1], mask[:1])  # one sample per chunk: the dataset mean spans chunks
        acc.update(0, 1, d[1:], mask[1:])
        table[variant] = acc.finalize().iloc[0]
    # by hand: sample means over the counted tokens (zero rows included in the mean, as in dF's mean)
    m1 = [(1 + 1 + 0) / 3, (0 + 2 + 0) / 3]
    m2 = [(0 - 1) / 2, (3 + 1) / 2]
    dd_sample = (sum(_cos(x, m1) for x in s1[:2]) / 2 + sum(_cos(x, m2) for x in s2[:2]) / 2) / 2
    mu = [(1 + 1 + 0 + 0 - 1) / 5, (0 + 2 + 0 + 3 + 1) / 5]  # E_x[dF] over the 5 counted tokens
    dd_dataset = (sum(_cos(x, mu) for x in s1[:2]) / 2 + sum(_cos(x, mu) for x in s2[:2]) / 2) / 2
    assert abs(dd_sample - dd_dataset) > 0.05  # the two definitions differ on this data
    eps = 8 * torch.finfo(torch.float64).eps
    for variant, want in (("sample", dd_sample), ("dataset", dd_dataset)):
        row = table[variant]
        assert row["dd"] == pytest.approx(want, abs=eps)  # `dd` is the chosen variant
        assert row["dd_sample"] == pytest.approx(dd_sample, abs=eps)  # both are always recorded
        assert row["dd_dataset"] == pytest.approx(dd_dataset, abs=eps)
    with pytest.raises(ValueError, match="diff_diff_mean"):
        pe.PersistenceAccumulator(vectors, diff_diff_mean="token")


def test_diff_diff_dataset_mean_is_nan_where_every_shift_is_zero():
    acc = pe.PersistenceAccumulator(torch.zeros(2, 2), diff_diff_mean="dataset")
    acc.update(1, 0, torch.zeros(1, 2, 2), torch.ones(1, 2))
    assert math.isnan(acc.finalize().iloc[0]["dd"])


# ------------------------------------------------------------------------------------------- token categories


def test_token_categories_mass_and_membership_by_hand():
    tokens = ["To", " Step", "x", "\n\n", "y"]
    p_ref = torch.tensor([[[0.1, 0.1, 0.5, 0.1, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]]], dtype=torch.float64)
    p_oth = torch.tensor([[[0.3, 0.2, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.6, 0.1]]], dtype=torch.float64)
    cats = {"process": [0, 1], "structure": [3]}
    df = ts.token_shift(p_ref.log(), p_oth.log(), torch.tensor([[0, 1]]), tokens, categories=cats)
    assert df["mass[process]"].tolist() == pytest.approx([0.2 + 0.1, -0.1 - 0.1], abs=1e-12)
    assert df["mass[structure]"].tolist() == pytest.approx([0.0, 0.4], abs=1e-12)
    assert df["boosted"].tolist() == ["To", "\n\n"]
    assert df["boosted_in[process]"].tolist() == [True, False]
    assert df["boosted_in[structure]"].tolist() == [False, True]
    assert df["ref_top_in[process]"].tolist() == [False, True]  # position 1: a tie, the first token wins
    by = ts.summarize(df, min_count=1)["by_group"].set_index("group")
    assert by.loc["other", "mass[structure]"] == pytest.approx(0.4, abs=1e-12)


def test_category_regexes_match_whole_token_texts():
    from mechsteer.readouts.token_shift_kind import category_ids

    tokens = ["To", " To", "Tom", "\n\n", "**", "x", ""]
    got = category_ids(tokens, {"process": r"\s*(To|Step)", "structure": r"\s*[#*\n]+\s*"})
    assert got == {"process": [0, 1], "structure": [3, 4]}


def test_category_regex_errors_are_spec_errors():
    from mechsteer.spec.kinds import READOUT_KINDS
    from mechsteer.spec.study import StudySpec  # noqa: F401 - registers every kind

    with pytest.raises(ValueError, match=r"categories.bad: not a regular expression"):
        READOUT_KINDS.spec("token_shift")(task="mini", categories={"bad": "(unclosed"})


# ------------------------------------------------------------------------------------------- prompts


def test_shuffle_draws_the_subset_datasets_shuffle_draws():
    import datasets

    from mechsteer.readouts.prompts import shuffled

    rows = [{"id": str(i), "problem": f"p{i}", "answer": str(i)} for i in range(50)]
    for seed in (0, 1):
        want = datasets.Dataset.from_list(rows).shuffle(seed=seed)
        assert [r["id"] for r in shuffled(rows, seed)] == want["id"]
    assert [r["id"] for r in shuffled(rows, 0)] != [r["id"] for r in rows]


def test_deepscaler_prompts_from_a_local_copy_drop_unanswered_rows(tmp_path):
    from mechsteer.readouts.prompts import load_problems
    from mechsteer.spec.kinds import READOUT_KINDS
    from mechsteer.spec.study import StudySpec  # noqa: F401

    (tmp_path / "deepscaler").mkdir()
    lines = [{"problem": f"q{i}", "answer": "" if i == 3 else str(i), "solution": "s"} for i in range(8)]
    (tmp_path / "deepscaler" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    spec = READOUT_KINDS.spec("token_shift")(
        task="deepscaler", split="train", shuffle=0, limit=4, data_dir=str(tmp_path)
    )
    got = load_problems(spec)
    kept = [f"q{i}" for i in range(8) if i != 3]  # the authors drop rows without an answer
    import numpy as np

    order = [kept[i] for i in np.random.default_rng(0).permutation(len(kept))][:4]
    assert [r["problem"] for r in got] == order


def test_deepscaler_prompts_are_validated_as_a_training_set(tmp_path):
    import textwrap

    from mechsteer.errors import SpecError
    from mechsteer.spec.loader import load_study

    doc = """
    name: s
    models: {m: {id: smollm2-135m}}
    conditions: {base: []}
    readouts: {r: {kind: first_token, task: deepscaler, limit: 4}}
    """
    (tmp_path / "s.yaml").write_text(textwrap.dedent(doc))
    with pytest.raises(SpecError, match=r"readouts.r.split: deepscaler is a training set.*split: train"):
        load_study(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(textwrap.dedent(doc).replace("limit: 4", "limit: 4, split: train, shuffle: 0"))
    assert load_study(tmp_path / "s.yaml").spec.readouts["r"].shuffle == 0


def test_only_finished_drops_truncated_samples(monkeypatch):
    """The readout's `only_finished` reaches the sampler's filter, and the readout learns how many it dropped."""
    from types import SimpleNamespace

    from mechsteer.readouts import teacher_forced as tf
    from mechsteer.sequences import Sequence

    seqs = [
        Sequence((1,), (2, 3), True, prompt=0),
        Sequence((1,), (2,), False, prompt=1),
        Sequence((4,), (5,), True, prompt=2),
    ]
    monkeypatch.setattr(tf, "sample_sequences", lambda task, ivs: list(seqs))
    on = SimpleNamespace(spec=SimpleNamespace(only_finished=True))
    off = SimpleNamespace(spec=SimpleNamespace(only_finished=False))
    kept, dropped = tf.kept_sequences(on, [])
    assert [q.prompt for q in kept] == [0, 2] and dropped == 1
    assert tf.kept_sequences(off, []) == (seqs, 0)
