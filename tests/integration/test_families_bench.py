"""benchmarks/families.py end to end on two tiny forced models (tests/forced_models.py) standing in for SmolLM2
and Gemma in a study of the Quickstart's shape (a default profile, a `gemma` profile, a `families` profile
with both models): the two runs, the diff, the one-folder run and its `--models` diff run as the documented
commands, and the section's numbers and sentences are checked against what the forced models must answer.
The up-front check for missing Gemma vectors is checked on a copy of the real study files."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from forced_models import forced_model
from scipy.stats import binomtest
from script_loader import REPO, load_script

from mechsteer.eval.mini_task import generate_mini

fam = load_script("benchmarks/families.py")

N = 32
MODELS = {"small": ("llama", 4, 32, "7", 0.5), "deep": ("qwen2", 7, 48, "6", 0.75)}
STUDY = {
    "name": "quickstart",
    "models": {"smol": {"id": "small", "dtype": "float32", "device": "cpu"}},
    "vectors": {
        "trained": {"kind": "file", "path": "small.safetensors"},
        "random_control": {"kind": "random", "seed": 1, "norm_like": "trained"},
    },
    "conditions": {
        "base": [],
        "steered": [{"kind": "add", "vector": "trained"}],
        "random_control": [{"kind": "add", "vector": "random_control"}],
    },
    "evaluation": {
        "tasks": ["mini"],
        "protocol": "greedy",
        "control": "random_control",
        "limit": N,
        "max_new_tokens": 1,
        "batch_size": N,
    },
    "readouts": {"first_token": {"kind": "first_token", "task": "mini", "limit": 4, "track": ["7", "6"]}},
    "profiles": {
        "gemma": {"models": {"smol": {"id": "deep"}}, "vectors": {"trained": {"path": "deep.safetensors"}}},
        "families": {
            "models": {"gemma": {"id": "deep", "dtype": "float32", "device": "cpu"}},
            "vectors": {
                "smol_trained": {"kind": "file", "path": "small.safetensors"},
                "gemma_trained": {"kind": "file", "path": "deep.safetensors"},
                "trained": {"kind": "per_model", "models": {"smol": "smol_trained", "gemma": "gemma_trained"}},
            },
        },
    },
}


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    root = tmp_path_factory.mktemp("families_bench")
    for name, spec in MODELS.items():
        forced_model(root, name, *spec)
    (root / "quickstart.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    args = ["--study", str(root / "quickstart.yaml"), "--output", str(root / "out"), "--results-dir", str(root / "r")]
    assert fam.main(args) == 0
    return root, (root / "r" / "families.md").read_text(), json.loads((root / "r" / "families.json").read_text())


def _right(digit: str) -> list[bool]:
    return [r["answer"] == digit for r in generate_mini("test", N)]


def test_the_section_holds_the_diffs_paired_table_and_the_commands(section):
    root, md, data = section
    assert data["commands"][:2] == [
        f"mechsteer run {root / 'quickstart.yaml'} -o {root / 'out'} --threads 1 -q",
        f"mechsteer run {root / 'quickstart.yaml'} -p gemma -o {root / 'out'} --threads 1 -q",
    ]
    assert data["commands"][2].startswith("mechsteer diff") and "--out" in data["commands"][2]
    assert data["commands"][3].endswith("-p families -o " + f"{root / 'out'} --threads 1 -q")
    assert "--models smol gemma" in data["commands"][4]
    small, deep = sum(_right("7")), sum(_right("6"))
    only_small = sum(s and not g for s, g in zip(_right("7"), _right("6"), strict=True))
    only_deep = sum(g and not s for s, g in zip(_right("7"), _right("6"), strict=True))
    base = next(
        line for line in md.splitlines() if line.startswith("| smol") and "| base " in line and "lenient" in line
    )
    cells = [c.strip() for c in base.split("|")]
    assert cells[5:8] == [str(N), f"{100 * small / N:.1f}", f"{100 * deep / N:.1f}"]
    assert cells[10] == f"{only_small} / {only_deep}"
    assert float(cells[11]) == pytest.approx(binomtest(only_deep, only_small + only_deep).pvalue, rel=1e-3)
    # the table is the diff's own file, and the one-folder diff agrees with it row by row
    assert (root / "out" / "families_diff" / "diff.md").read_text().count(base) == 1
    assert data["one_folder"]["same_paired_rows"] is True
    assert "are identical to the two-folder diff's" in md


def test_where_the_families_agree_and_differ_is_generated_from_the_numbers(section):
    root, md, data = section
    small, deep = sum(_right("7")), sum(_right("6"))
    p_small, p_deep = binomtest(0, small).pvalue, binomtest(0, deep).pvalue  # steered: every answer wrong
    assert p_small >= 0.05 > p_deep  # the slice is chosen so that one family's drop is significant
    ids = "small", "deep"  # the models' ids as the study names them
    (line,) = [x for x in md.splitlines() if x.startswith("- **`steered`")]
    assert "they differ" in line
    assert f"it does not change {ids[0]}'s accuracy ({100 * -small / N:+.1f} points" in line
    assert f"lowers {ids[1]}'s ({100 * -deep / N:+.1f} points" in line
    steering = data["facts"]["steering"]
    assert steering[ids[1]]["steered"]["vs_baseline"][1] == pytest.approx(p_deep)
    (unsteered,) = [x for x in md.splitlines() if x.startswith("- **Unsteered")]
    assert "do not differ at this sample size" in unsteered
    (sites,) = [x for x in md.splitlines() if x.startswith("- **Where `add` acts**")]
    assert sites.count("identical to a bias on block l's mlp.down_proj") == 2  # both tiny models are pre-norm
    assert "- **First token at the end of the prompt**" in md and "p(7) 0.50 -> 0.00 under `base`" in md
    (p7,) = [x for x in md.splitlines() if x.startswith("| base | first_token | p(7) |")]
    assert p7.split("|")[4:7] == [" 0.5 ", " 0.00255 ", " -0.497 "]  # small's 1/2 against deep's (1 - 3/4) / 98


def test_missing_gemma_vectors_are_named_up_front(tmp_path, capsys):
    """A study whose Gemma vectors come from a training run (not the bundle) that has not run yet."""
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(REPO / "studies" / "train_mini.yaml", studies / "train_mini.yaml")
    text = (REPO / "studies" / "quickstart.yaml").read_text()
    bundled = "{kind: bundled, name: gemma3-270m/all_layers}"
    assert text.count(bundled) == 2
    (studies / "quickstart.yaml").write_text(
        text.replace(bundled, "{kind: trained, train: train_mini.yaml, profile: gemma}")
    )
    missing = fam.missing_vectors(studies / "quickstart.yaml", [None, "gemma", "families"])
    assert [cmd for _, cmd in missing] == [f"mechsteer train {studies / 'train_mini.yaml'} --profile gemma"]
    assert missing[0][0].startswith(str(tmp_path / "outputs" / "train" / "train_mini-gemma"))
    assert fam.main(["--study", str(studies / "quickstart.yaml"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "mechsteer train studies/train_mini.yaml -p gemma" in err and "--gemma-run" in err
    assert not (tmp_path / "out").exists()  # nothing ran
