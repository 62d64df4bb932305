"""`mechsteer plan --estimate`: the tokens each cell prefills, generates and teacher-forces (each kind's `work`),
checked against counts worked out by hand for a small plan, and the GPU seconds they take at the rates of a
throughput file given with `--throughput`; a malformed file is one located error."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.engine.estimate import estimate_plan, load_throughput
from mechsteer.engine.plan import compile_study
from mechsteer.spec.loader import load_study
from mechsteer.spec.model_configs import model_config

STUDY = """
name: est
models: {m: {id: smollm2-135m, max_length: 512}}
vectors: {v: {kind: random, norm: 1.0}}
conditions: {base: [], s: [{kind: add, vector: v}]}
evaluation: {tasks: [mini], protocol: greedy, limit: 10, batch_size: 8}
readouts:
  gen: {kind: generate, task: mini, limit: 4, samples: 3, temperature: 1.0, max_new_tokens: 32, batch_size: 6}
  first: {kind: first_token, task: mini, limit: 5}
  shift: {kind: token_shift, conditions: [s], task: mini, limit: 2, max_new_tokens: 16}
  persist: {kind: persistence, conditions: [s], task: mini, limit: 2, max_new_tokens: 100, sources: [1, 2]}
seeds: [0, 1]
"""


def _throughput(tmp_path, params: float) -> str:
    f = tmp_path / "tp.yaml"
    f.write_text(
        textwrap.dedent(
            f"""\
            format: mechsteer.throughput/1
            gpu: test-gpu
            gpus: {{test-gpu: {{name: a test GPU, factor: 1.0, source: test}}}}
            size_classes: {{tiny: {params}}}
            rates:
              - {{gpu: test-gpu, backend: hf, size: tiny, decode_per_sequence: 10, decode_max: 40, prefill: 1000,
                  score: 500, train: 100, source: "calibrated: test"}}
            assumptions:
              prompt_tokens: {{default: 150, mini: 50, source: test}}
              completion_tokens: {{default: 800, mini: 20, source: test}}
            """
        )
    )
    return str(f)


@pytest.fixture
def estimate(tmp_path):
    study = tmp_path / "est.yaml"
    study.write_text(STUDY)
    table = load_throughput(_throughput(tmp_path, model_config("smollm2-135m").n_params() / 1e9))
    plan = compile_study(load_study(study))
    cells, sources, notes = estimate_plan(plan, table)
    return cells.set_index(["condition", "measurement", "seed"]), sources, notes


def test_token_counts_match_the_hand_counts(estimate):
    cells, _, _ = estimate
    # eval: 10 problems x 1 sample, prompt 50, no max_new_tokens: cap = max_length 512 - 50, expected min(462, 20)
    e = cells.loc[("base", "eval:mini", 0)]
    assert (e.sequences, e.prompt_tokens, e.generated, e.generated_cap, e.scored) == (10, 500, 200, 4620, 0)
    # generate: 4 x 3 samples of min(32, 20) tokens, sampled so both seeds run
    g = cells.loc[("s", "readout:gen", 1)]
    assert (g.sequences, g.prompt_tokens, g.generated, g.generated_cap) == (12, 600, 240, 384)
    assert ("base", "readout:first", 1) not in cells.index  # a next-token distribution runs one seed
    f = cells.loc[("base", "readout:first", 0)]
    assert (f.sequences, f.prompt_tokens, f.generated) == (0, 250, 0)
    # token shift under `s` only: 2 sequences of 16 tokens, teacher-forced with and without the condition
    t = cells.loc[("s", "readout:shift", 0)]
    assert ("base", "readout:shift", 0) not in cells.index
    assert (t.sequences, t.generated, t.generated_cap, t.scored, t.scored_cap) == (2, 32, 32, 264, 264)
    # persistence: per source layer (2), 2 sequences, two teacher-forced passes
    p = cells.loc[("s", "readout:persist", 0)]
    assert (p.sequences, p.prompt_tokens, p.generated, p.generated_cap) == (4, 200, 80, 400)
    assert (p.scored, p.scored_cap) == (2 * 2 * 2 * (50 + 20), 2 * 2 * 2 * (50 + 100))


def test_hours_use_the_override_rates(estimate):
    cells, sources, _ = estimate
    hours = lambda key: cells.loc[key].gpu_hours * 3600  # noqa: E731
    # decode: min(10 tok/s x min(batch 8, 10 sequences), 40 cap) = 40 tok/s; prefill 1000 tok/s
    assert hours(("base", "eval:mini", 0)) == pytest.approx(200 / 40 + 500 / 1000)
    assert hours(("s", "readout:gen", 0)) == pytest.approx(240 / 40 + 600 / 1000)  # batch 6: min(60, 40)
    assert hours(("s", "readout:shift", 0)) == pytest.approx(32 / 20 + 100 / 1000 + 264 / 500)  # 2 sequences
    assert cells.loc[("base", "eval:mini", 0)].gpu_hours_cap * 3600 == pytest.approx(4620 / 40 + 500 / 1000)
    (src,) = [v for k, v in sources.items() if k.endswith("(hf)")]
    assert "calibrated: test" in src


def test_the_package_table_states_its_sources():
    table = load_throughput()
    assert table.gpu in table.gpus and all(r.source for r in table.rates)
    assert all("uncalibrated assumption" in r.source for r in table.rates)
    rates, how = table.rate("a100-80gb", "hf", 7.6)
    h100, _ = table.rate("h100-80gb", "hf", 7.6)
    assert rates["decode_max"] == pytest.approx(h100["decode_max"] * table.gpus["a100-80gb"].factor)
    assert "scaled" in how and "a100-80gb" in how


def test_a_malformed_throughput_file_is_one_located_error(tmp_path):
    study = tmp_path / "est.yaml"
    study.write_text(STUDY)
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: mechsteer.throughput/1\nrates:\n  - {gpu: h100-80gb, backend: tpu, size: 7b}\n")
    r = CliRunner().invoke(app, ["plan", str(study), "--estimate", "--throughput", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert f"{bad}:3:" in text and "rates[0].backend" in text
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        "format: mechsteer.throughput/1\nrates:\n  - {gpu: tpu-v5, backend: hf, size: 7b, decode_per_sequence: 1,"
        " decode_max: 2, source: x}\n"
    )
    r = CliRunner().invoke(app, ["plan", str(study), "--estimate", "--throughput", str(unknown)])
    assert r.exit_code == 1 and "tpu-v5" in r.output and "gpus:" in r.output
    r = CliRunner().invoke(app, ["plan", str(study), "--estimate", "--gpu", "nope"])
    assert r.exit_code == 1 and "--gpu 'nope'" in r.output


def test_the_cli_prints_groups_and_json(tmp_path):
    study = tmp_path / "est.yaml"
    study.write_text(STUDY)
    tp = _throughput(tmp_path, 0.1345)
    r = CliRunner().invoke(app, ["plan", str(study), "--estimate", "--throughput", tp, "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["gpu"] == "test-gpu" and {g["measurement"] for g in doc["groups"]} >= {"eval:mini", "readout:shift"}
    assert doc["total"]["generated"] == sum(c["generated"] for c in doc["cells"])
    r = CliRunner().invoke(app, ["plan", str(study), "--estimate", "--throughput", tp])
    assert r.exit_code == 0 and "readout:persist" in r.output and "calibrated: test" in " ".join(r.output.split())


def test_a_recorded_benchmark_run_calibrates_its_size_class(tmp_path, monkeypatch):
    """benchmarks/calibrate_throughput.py turns a vllm_vs_hf record into calibrated rows that the estimate uses
    for that model's size class only (here the CPU record of the embedded model)."""
    import sys

    from script_loader import REPO, load_script

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    cal = load_script("benchmarks/calibrate_throughput.py")
    src = REPO / "benchmarks" / "results" / "vllm_vs_hf.json"
    record = json.loads(src.read_text())
    out = tmp_path / "tp.yaml"
    monkeypatch.setattr(
        sys, "argv", ["x", "--from", str(src), "--gpu", "cpu-2core", "--gpu-name", "a CPU", "--out", str(out)]
    )
    cal.main()
    tp = record["results"][0]["throughput"]
    table = load_throughput(out)
    params = model_config("smollm2-135m").n_params() / 1e9
    rates, how = table.rate("cpu-2core", "hf", table.size_classes[table.size_class(params)])  # unscaled in its class
    expected = (tp["tokens"] - record["args"]["tp_prompts"]) / (tp["hf"]["total_s"] - tp["hf"]["prefill_s"])
    assert rates["decode_max"] == pytest.approx(expected, rel=1e-3)
    assert rates["decode_per_sequence"] == pytest.approx(expected / record["args"]["batch"], rel=1e-2)
    assert "calibrated: benchmarks/vllm_vs_hf.py on smollm2-135m" in how
    big, how_big = table.rate("cpu-2core", "hf", 7.6)  # a 7B model: the package's assumption, not this run
    assert "uncalibrated assumption" in how_big
