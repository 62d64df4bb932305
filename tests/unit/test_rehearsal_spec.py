"""The spec side of a rehearsal (mechsteer.spec.rehearsal): what it keeps, cuts and asks each kind to stand in.
Torch-free: no twin is built here (the twin folders are stand-in names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from mechsteer.spec.loader import load_study, load_study_dict
from mechsteer.spec.rehearsal import Rehearsal, RehearsalCaps, evaluation_budget, file_rows, rehearsed_study

STUDIES = REPO / "studies"


def _rehearsal(tmp_path, ls, **caps) -> Rehearsal:
    return Rehearsal(tmp_path / "stand-ins", RehearsalCaps(**caps), tmp_path / "data", ls.resolve_path)


@pytest.mark.parametrize(
    ("conditions", "tasks", "seeds", "kept"),
    [
        (4, 6, 3, (6, 2)),  # 4 x 6 x 2 = 48 <= 60: every task, seeds cut to caps.seeds
        (16, 6, 3, (3, 1)),  # 16 x 6 > 60: tasks cut first (60 // 16 = 3), then one seed
        (530, 6, 3, (1, 1)),  # never below one task and one seed
        (1, 1, 1, (1, 1)),
    ],
)
def test_evaluation_budget(conditions, tasks, seeds, kept):
    t, s = evaluation_budget(conditions, [f"t{i}" for i in range(tasks)], list(range(seeds)), RehearsalCaps())
    assert (len(t), len(s)) == kept
    assert t == [f"t{i}" for i in range(kept[0])] and s == list(range(kept[1]))


def test_a_paper_profile_is_rehearsed_at_full_sweep_size(tmp_path):
    ls = load_study(STUDIES / "penultimate.yaml", "paper")
    r = _rehearsal(tmp_path, ls)
    doc = rehearsed_study(ls, r, {"smol": "/twins/qwen"})
    model = doc["models"]["smol"]
    assert (model["id"], model["dtype"], model["device"]) == ("/twins/qwen", "float32", "cpu")
    assert model["max_length"] == 4096  # the length budget stays (bounds are checked against it)
    # every sweep as written: the twin has the same heads, so it expands to 28 query and 4 KV heads
    assert doc["conditions"]["steer_head_{head}"]["sweep"] == {"head": "query_heads"}
    ev = doc["evaluation"]
    assert ev["protocol"] == "paper" and ev["data_dir"] == str(tmp_path / "data")
    caps = RehearsalCaps()
    assert (ev["limit"], ev["max_new_tokens"], ev["tasks"], ev["seeds"]) == (
        caps.problems,
        caps.new_tokens,
        ["aime24"],
        [0],
    )
    assert ev["samples"] == {"aime24": 2}
    fig6 = doc["readouts"]["fig6"]
    # a readout of finished samples only gets 4x the tokens and 2x the prompts, so that the twin's samples end
    assert (fig6["limit"], fig6["max_new_tokens"], fig6["only_finished"]) == (
        2 * caps.problems,
        4 * caps.new_tokens,
        True,
    )
    assert fig6["task"] == "deepscaler" and doc["readouts"]["first_token"]["limit"] == caps.problems
    assert fig6["data_dir"] == str(tmp_path / "data") and fig6["reference"] == "skip_attn"
    # trained vectors read stand-in runs: one folder per training file and profile, the blocks they read
    pen = doc["vectors"]["pen"]
    assert pen["kind"] == "trained" and pen["output"] == str(
        tmp_path / "stand-ins" / "runs" / "train_paper-single_layer"
    )
    (run,) = r.runs.values()
    assert run.blocks == (26, 27) and not run.single and run.checkpoints == ("best",)
    assert any("58 conditions" not in n and "evaluation cells" in n for n in r.notes)


def test_runs_merge_their_references(tmp_path):
    ls = load_study(STUDIES / "checkpoints.yaml", "paper")
    r = _rehearsal(tmp_path, ls)
    rehearsed_study(ls, r, {"smol": "/twins/qwen"})
    runs = {(Path(k[0]).name, k[1]): v for k, v in r.runs.items()}
    single = runs[("train_paper.yaml", "single_layer")]
    assert single.blocks == "all" and single.checkpoints == (106, 159, 212, 265, 314)
    prefix = runs[("train_paper.yaml", "prefix_to")]
    assert prefix.blocks == (26, 27) and not prefix.single
    assert runs[("train_paper.yaml", None)].single and runs[("train_paper.yaml", None)].blocks is None


def test_a_per_block_lora1_sweep_reads_a_stand_in_run(tmp_path):
    """`layer: "{layer}"` is a sweep placeholder: the adapter's kind keeps it and adds the stand-in `output`."""
    ls = load_study(STUDIES / "tokenwise.yaml", "paper")
    r = _rehearsal(tmp_path, ls)
    doc = rehearsed_study(ls, r, {"smol": "/twins/qwen"})
    (iv,) = doc["conditions"]["lora1_block_{layer}"]["interventions"]
    assert iv["layer"] == "{layer}" and iv["per_block"] is True
    assert iv["output"] == str(tmp_path / "stand-ins" / "runs" / "train_paper-lora1_single-lora1")
    runs = {(k[1], k[2]): v for k, v in r.runs.items()}
    assert runs[("lora1_single", "lora1.safetensors")].blocks == "all"
    assert runs[("lora1", "lora1.safetensors")].single


def test_files_and_readout_sizes_are_stood_in(tmp_path):
    """A bundled set becomes a `file` set of random rows at the bundled file's rows (its `setup` kept, so origin
    checks see a per-block stack); an adapter file a random adapter; a DiffSAE a small SAE."""
    ls = load_study(STUDIES / "logit_lens.yaml")
    r = _rehearsal(tmp_path, ls)
    doc = rehearsed_study(ls, r, {"smol": "/twins/smol"})
    singles = doc["vectors"]["singles"]
    assert singles["kind"] == "file" and Path(singles["path"]).parent == tmp_path / "stand-ins" / "files"
    stand_in = r.files[singles["path"]]
    bundled = ls.spec.vectors["singles"].file()
    assert stand_in.rows == file_rows(bundled)[0] and 2 < len(stand_in.rows) < 30  # the bundled file's rows
    assert stand_in.setup.startswith("single_layer stack")
    kept = ls.spec.vectors["random_singles"].model_dump(mode="json")
    assert doc["vectors"]["random_singles"] == {k: v for k, v in kept.items() if v is not None}  # built on the twin
    sae = rehearsed_study(ls := load_study(STUDIES / "diffsae.yaml", "paper"), _rehearsal(tmp_path, ls), {"smol": "x"})
    assert sae["readouts"]["sae"]["sae"]["width"] == 32 and sae["readouts"]["sae"]["limit"] == 2
    acc = load_study(STUDIES / "accuracy.yaml")
    r = _rehearsal(tmp_path, acc)
    (lora,) = rehearsed_study(acc, r, {"smol": "x"})["conditions"]["lora1"]
    assert r.files[lora["path"]].file == "lora1" and r.files[lora["path"]].rows == tuple(range(30))


def test_a_rehearsed_document_validates_with_the_rehearsal_fields(tmp_path):
    """What the transform writes is a valid study (given existing twin folders it would compile)."""
    ls = load_study_dict(
        {
            "name": "t",
            "models": {"m": {"id": "smollm2-135m", "backend": "vllm"}},
            "vectors": {"v": {"kind": "random", "norm": 1.0}},
            "conditions": {"base": [], "s": [{"kind": "add", "vector": "v"}]},
            "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 50},
            "readouts": {"g": {"kind": "generate", "prompts": ["a", "b", "c"], "max_new_tokens": 40, "samples": 1}},
            "seeds": [0, 1, 2],
        },
        check_refs=False,  # vLLM is not installed here; the rehearsal runs on transformers
    )
    r = _rehearsal(tmp_path, ls)
    doc = rehearsed_study(ls, r, {"m": "smollm2-135m"})
    assert doc["models"]["m"]["backend"] == "hf" and doc["seeds"] == [0, 1]
    assert doc["readouts"]["g"]["prompts"] == ["a", "b"] and doc["readouts"]["g"]["max_new_tokens"] == 4
    again = load_study_dict(doc)
    assert again.spec.evaluation.limit == 2 and again.spec.evaluation.tasks == ["mini"]
