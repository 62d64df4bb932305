"""A study that declares two models of different families and depths (a tiny Llama of 4 blocks x 32 and a
tiny Qwen2 of 7 blocks x 48), each steered with its own vectors through one `per_model` vector set, run end to
end into ONE folder: one report with both models (their intervention sites, the headline side by side), and
`mechsteer diff FOLDER --models A B` (CLI and Python) with numbers checked by hand.

The models are `tests/forced_models.py`'s: each answers one digit on every problem ("7" for small, "6" for
deep) with a known probability at the end of the prompt, and a steered model answers nothing right.
"""

from __future__ import annotations

import json

import pytest
import yaml
from forced_models import forced_model, p_digit
from scipy.stats import binomtest
from typer.testing import CliRunner

import mechsteer as ms
from mechsteer.cli.app import app
from mechsteer.eval.mini_task import generate_mini
from mechsteer.vectors.vector_set import load_vector_set

N_PROBLEMS = 16
MODELS = {  # name: (architecture, blocks, width, answered digit, p(digit) at the end of the prompt)
    "small": ("llama", 4, 32, "7", 0.5),
    "deep": ("qwen2", 7, 48, "6", 0.75),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The study, run once: (folder, output root)."""
    root = tmp_path_factory.mktemp("two_families")
    for name, spec in MODELS.items():
        forced_model(root, name, *spec)
    study = {
        "name": "two",
        "models": {m: {"id": m, "dtype": "float32", "device": "cpu"} for m in MODELS},
        "vectors": {
            "v_small": {"kind": "file", "path": "small.safetensors"},
            "v_deep": {"kind": "file", "path": "deep.safetensors"},
            "v": {"kind": "per_model", "models": {"small": "v_small", "deep": "v_deep"}},
            "ctl": {"kind": "random", "seed": 5, "norm_like": "v"},
        },
        "conditions": {
            "base": [],
            "steer": [{"kind": "add", "vector": "v"}],
            "control": [{"kind": "add", "vector": "ctl"}],
            "single_{layer}": {
                "sweep": {"layer": "layers"},
                "interventions": [{"kind": "add", "vector": "v", "layer": "{layer}"}],
            },
        },
        "evaluation": {
            "tasks": ["mini"],
            "protocol": "greedy",
            "limit": N_PROBLEMS,
            "max_new_tokens": 1,
            "batch_size": N_PROBLEMS,
            "control": "control",
        },
        "readouts": {
            "first": {
                "kind": "first_token",
                "task": "mini",
                "limit": 4,
                "track": ["7", "6"],
                "conditions": ["base", "steer"],
            }
        },
    }
    (root / "two.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(root / "two.yaml"), "-o", str(root / "out"), "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return root / "out" / "two", root


def _answers() -> list[str]:
    return [r["answer"] for r in generate_mini("test", N_PROBLEMS)]


def test_each_model_reads_its_own_vectors_from_one_per_model_set(run):
    folder, root = run
    r = ms.load_results(folder)
    for name, (_, n, d, _, _) in MODELS.items():
        rec = r.record(model=name, condition="steer", measurement="mini")
        v = rec["vectors"]["v"]
        assert v["layers"] == list(range(n)) and v["sha256"] == load_vector_set(root / f"{name}.safetensors").sha256()
        assert rec["model_provenance"]["d_model"] == d
        ctl = r.record(model=name, condition="control", measurement="mini")["vectors"]["ctl"]
        assert ctl["layers"] == list(range(n))  # norm_like followed this model's own set
        assert all(abs(x - 2.0) < 1e-5 for x in ctl["norms"].values())


def test_diff_of_two_models_inside_the_folder_by_hand(run):
    folder, _ = run
    d = ms.diff(folder, models=("small", "deep"), n_boot=2000)
    right = {m: [a == MODELS[m][3] for a in _answers()] for m in MODELS}
    only_small = sum(s and not g for s, g in zip(right["small"], right["deep"], strict=True))
    only_deep = sum(g and not s for s, g in zip(right["small"], right["deep"], strict=True))
    assert only_small and only_deep  # the slice has problems for each digit
    base = d.paired[(d.paired.condition == "base") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert base.n_shared == N_PROBLEMS
    assert base.acc_a == pytest.approx(sum(right["small"]) / N_PROBLEMS)
    assert base.acc_b == pytest.approx(sum(right["deep"]) / N_PROBLEMS)
    assert (base.right_only_a, base.right_only_b) == (only_small, only_deep)
    assert base.p_mcnemar == pytest.approx(binomtest(only_deep, only_small + only_deep, 0.5).pvalue)
    steer = d.paired[(d.paired.condition == "steer") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert (steer.acc_a, steer.acc_b, steer.p_mcnemar) == (0.0, 0.0, 1.0)
    # layer sweeps matched by relative depth: block l of 4 -> round(l * 6 / 3) of 7
    swept = d.matches[d.matches.condition_a.str.startswith("single_")]
    assert dict(zip(swept.condition_a, swept.condition_b, strict=True)) == {
        "single_0": "single_0",
        "single_1": "single_2",
        "single_2": "single_4",
        "single_3": "single_6",
    }
    # readout metrics side by side: p(digit) by hand (about 1/2 and 3/4 by construction)
    side = d.readouts()
    for name, col, metric in (("small", "a", "p(7)"), ("deep", "b", "p(6)")):
        want, tol = p_digit(MODELS[name][2], MODELS[name][4])
        assert side.loc[("small", "base", "first", metric), col] == pytest.approx(want, abs=tol)
    assert side.loc[("small", "base", "first", "p(7)"), "delta"] < -0.4  # 1/2 -> about 0


def test_the_cli_prints_and_writes_the_same_diff(run, tmp_path):
    folder, _ = run
    cli = CliRunner()
    got = cli.invoke(app, ["diff", str(folder), "--models", "small", "deep", "--format", "json", "--n-boot", "500"])
    assert got.exit_code == 0, got.output
    data = json.loads(got.output)
    api = ms.diff(folder, models=("small", "deep"), n_boot=500).to_dict()
    assert data["models"] == ["small", "deep"] and data["paired"] == api["paired"]
    assert data["model_ids"]["a"]["small"].endswith("LlamaForCausalLM, 4 blocks")
    table = cli.invoke(
        app, ["diff", str(folder), "--models", "small", "deep", "--out", str(tmp_path / "d")], env={"COLUMNS": "240"}
    )
    assert table.exit_code == 0, table.output
    assert "model deep - model small" in table.output and "single_3 -> single_6" in table.output
    assert (tmp_path / "d" / "diff.md").read_text().startswith("# diff of `two`: model deep - model small")


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--models", "small", "gemma"], 1, "declares no model 'gemma'"),
        (["--models", "deep", "deep"], 1, "a model compared with itself"),
        (["OTHER", "--models", "small", "deep"], 1, "two folders were given"),
        ([], 1, "no models to compare inside it"),
        (["--models", "small"], 2, "'--models' requires 2 arguments"),  # one model only: typer's usage error
    ],
)
def test_the_cli_refuses_with_one_located_line(run, args, code, message):
    folder, root = run
    args = [str(root / "out") if a == "OTHER" else a for a in args]
    got = CliRunner().invoke(app, ["diff", str(folder), *args])
    assert got.exit_code == code and message in " ".join(got.output.split()), got.output
    assert "Traceback" not in got.output


def test_one_report_with_both_families(run):
    folder, _ = run
    md = (folder / "report" / "report.md").read_text()
    section = md[md.index("## Models and intervention sites") :]
    section = section[: section.index("\n## ", 5)]
    for name, (_, n, d, _, _) in MODELS.items():
        assert f"| {name}" in section and f"{n} x {d}" in section
        assert f"- `{name}`, `add` (`steer`, `control`, `single_0`" in section
    assert "identical to a bias on block l's mlp.down_proj" in section  # pre-norm: add is a down_proj bias
    right = {m: sum(a == MODELS[m][3] for a in _answers()) for m in MODELS}
    row = next(line for line in section.splitlines() if line.startswith("| mini") and "| base" in line)
    assert f"{right['small'] / N_PROBLEMS * 100:.1f} [" in row.split("|")[3]
    assert f"{right['deep'] / N_PROBLEMS * 100:.1f} [" in row.split("|")[4]
    assert "--models small deep" in section
