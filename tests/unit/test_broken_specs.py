"""A corpus of broken study files: each must give one clear located message, exit 1, and no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mechsteer.cli.app import app

GOOD = """\
name: t
models:
  m: {id: smollm2-135m}
vectors:
  v: {kind: random, norm: 1.0}
conditions:
  base: []
  steer: [{kind: add, vector: v, layer: last}]
readouts:
  r: {kind: first_token, prompts: [hi]}
"""

# (case id, study text, fragments that must all appear in the error output)
CASES = [
    ("yaml-syntax", "name: t\nmodels: [\n", ["s.yaml:", "YAML syntax error"]),
    (
        "unknown-evaluation-reference",
        GOOD + "evaluation: {tasks: [mini], reference: full_ft}\n",
        ["evaluation.reference", "no condition named 'full_ft'", "base, steer"],
    ),
    ("bad-indent", "name: t\n models: {}\n", ["YAML syntax error", "s.yaml:2"]),
    ("not-a-mapping", "- a\n- b\n", ["must be a YAML mapping"]),
    ("empty-file", "", ["must be a YAML mapping"]),
    ("duplicate-key", GOOD.replace("name: t\n", "name: t\nname: u\n"), ["duplicate key 'name'", "s.yaml:2"]),
    ("missing-models", GOOD.replace("models:\n  m: {id: smollm2-135m}\n", ""), ["models", "Field required"]),
    ("unknown-top-key", GOOD + "seedz: [1]\n", ["seedz", "Extra inputs are not permitted", "s.yaml:11"]),
    ("bad-name", GOOD.replace("name: t", "name: 'has space'"), ["name", "pattern"]),
    ("unknown-intervention-kind", GOOD.replace("kind: add", "kind: ad"), ["conditions.steer[0]", "'ad'", "add"]),
    ("missing-kind", GOOD.replace("{kind: first_token, ", "{"), ["readouts.r", "kind"]),
    ("unknown-vector-kind", GOOD.replace("kind: random", "kind: randum"), ["vectors.v", "randum"]),
    (
        "undefined-vector",
        GOOD.replace("vector: v,", "vector: w,"),
        ["conditions.steer[0].vector", "unknown vector set 'w'", "s.yaml:8"],
    ),
    (
        "layer-out-of-range",
        GOOD.replace("layer: last", "layer: 30"),
        ["conditions.steer[0].layer", "out of range", "30 layers"],
    ),
    ("negative-layer-out-of-range", GOOD.replace("layer: last", "layer: -31"), ["out of range"]),
    ("layer-typo", GOOD.replace("layer: last", "layer: lats"), ["conditions.steer[0].layer", "did you mean 'last'"]),
    ("depth-out-of-range", GOOD.replace("layer: last", "layer: {depth: 1.5}"), ["layer", "depth"]),
    ("duplicate-layers", GOOD.replace("layer: last", "layer: [last, -1]"), ["same layer twice"]),
    ("bad-dtype", GOOD.replace("{id: smollm2-135m}", "{id: smollm2-135m, dtype: fp8}"), ["models.m.dtype", "bfloat16"]),
    ("bad-scale-type", GOOD.replace("layer: last}", "layer: last, scale: big}"), ["scale", "number"]),
    ("bad-positions", GOOD.replace("layer: last}", "layer: last, positions: later}"), ["positions"]),
    (
        "bad-first-k",
        GOOD.replace("layer: last}", "layer: last, positions: {first_k_generated: 0}}"),
        ["first_k_generated", "greater than 0"],
    ),
    ("random-norm-negative", GOOD.replace("norm: 1.0", "norm: -1.0"), ["vectors.v.norm", "greater than 0"]),
    (
        "norm-like-unknown",
        GOOD.replace("{kind: random, norm: 1.0}", "{kind: random, norm_like: nope}"),
        ["vectors.v.norm_like", "unknown vector set 'nope'"],
    ),
    (
        "vector-cycle",
        GOOD.replace(
            "{kind: random, norm: 1.0}", "{kind: scaled, of: w, factor: 2}\n  w: {kind: scaled, of: v, factor: 2}"
        ),
        ["cycle"],
    ),
    (
        "missing-vector-file",
        GOOD.replace("{kind: random, norm: 1.0}", "{kind: file, path: nope.safetensors}"),
        ["vectors.v.path", "not found", "relative to the study file"],
    ),
    (
        "measures-nothing",
        GOOD.replace("readouts:\n  r: {kind: first_token, prompts: [hi]}\n", ""),
        ["measures nothing"],
    ),
    ("readout-two-sources", GOOD.replace("prompts: [hi]", "prompts: [hi], task: mini"), ["readouts.r", "exactly one"]),
    ("readout-unknown-task", GOOD.replace("prompts: [hi]", "task: mathh"), ["readouts.r.task", "unknown task"]),
    (
        "greedy-many-samples",
        GOOD.replace("kind: first_token, prompts: [hi]", "kind: generate, prompts: [hi], samples: 4"),
        ["samples: 1"],
    ),
    ("eval-unknown-task", GOOD + "evaluation: {tasks: [aime2024]}\n", ["evaluation.tasks[0]", "aime24"]),
    ("eval-greedy-seeds", GOOD + "evaluation: {tasks: [mini], seeds: [0, 1]}\n", ["evaluation", "one seed"]),
    ("unknown-profile-key", GOOD + "profiles:\n  mini: {modelz: {}}\n", ["profiles.mini.modelz"]),
    (
        "profile-breaks-spec",
        GOOD + "profiles:\n  mini:\n    models: {m: {dtype: int8}}\n",
        ["models.m.dtype", "s.yaml:13", "profile mini"],
    ),
    ("schema-version", "schema_version: 2\n" + GOOD, ["schema_version"]),
    (
        "bundled-vectors-of-another-model",
        GOOD.replace("{id: smollm2-135m}", "{id: Qwen/Qwen2.5-Math-7B}").replace(
            "{kind: random, norm: 1.0}", "{kind: bundled, name: smollm2-135m/all_layers}"
        ),
        ["vectors.v.name", "[30 layers x d_model 576]", "[28 layers x d_model 3584]", "kind: transfer"],
    ),
    (
        "empty-conditions",
        GOOD.replace("conditions:\n  base: []\n  steer: [{kind: add, vector: v, layer: last}]\n", "conditions: {}\n"),
        ["conditions", "at least 1"],
    ),
]


@pytest.fixture
def runner():
    return CliRunner()


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


def test_good_spec_is_accepted(tmp_path, runner):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD)
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("case,text,fragments", CASES, ids=[c[0] for c in CASES])
def test_broken_spec_gets_a_clear_error(tmp_path, runner, case, text, fragments):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    r = runner.invoke(app, ["validate", str(p)])
    out = r.output
    assert r.exit_code == 1, out
    assert "Traceback" not in out, out
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "error" in out and str(p) in out, out
    for frag in fragments:
        assert frag in out, f"{frag!r} not in:\n{out}"


def test_missing_study_file(tmp_path, runner):
    r = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 1
    assert "study file not found" in r.output


def test_unknown_profile_lists_defined_ones(tmp_path, runner):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD + "profiles:\n  mini: {seeds: [1]}\n")
    r = runner.invoke(app, ["plan", str(p), "--profile", "paper", "-o", str(tmp_path / "out")])
    assert r.exit_code == 1
    assert "profile 'paper' is not defined" in r.output and "mini" in r.output
