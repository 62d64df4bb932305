"""Bounded inputs: a study's size is checked before anything expands (cells per study, `--max-cells`), names
hold no format specs and fit in file names, YAML aliases cannot expand without bound, generation lengths fit
the model, limits are sane. Each refusal is one located line, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.errors import MechsteerError, SpecError
from mechsteer.spec.loader import load_study

HEAD = """\
name: t
models:
  m: {id: smollm2-135m}
vectors:
  v: {kind: random, norm: 1.0}
readouts:
  r: {kind: first_token, prompts: [hi]}
conditions:
  base: []
"""


def _write(tmp_path, text: str, name: str = "s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _sweep(name: str, sweep: str, where: str = "", interventions: str = "[{kind: add, vector: v, layer: 1}]"):
    out = f'  "{name}":\n    sweep: {sweep}\n'
    if where:
        out += f"    where: {where}\n"
    return out + f"    interventions: {interventions}\n"


def _invoke(args):
    r = CliRunner().invoke(app, args)
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def _validate_in_a_box(*paths) -> str:
    """`mechsteer validate PATH...` in a subprocess held to 2 GiB of address space and 120 s, so a study that
    expands without bound fails this test instead of exhausting the machine; returns its output."""
    import os
    import resource
    import subprocess
    import sys

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "COLUMNS": "400"}
    try:
        r = subprocess.run(
            [sys.executable, "-m", "mechsteer.cli.app", "validate", *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=cap,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("validate did not finish within 120 s")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out[-2000:]
    return out


def test_a_1500_by_1500_sweep_is_refused_before_it_expands(tmp_path):
    values = "[" + ", ".join(map(str, range(1500))) + "]"
    p = _write(tmp_path, HEAD + _sweep("p_{i}_{j}", f"{{i: {values}, j: {values}}}", '["i < j"]'))
    out = " ".join(_validate_in_a_box(p).split())
    assert f"{p}:10:3: conditions.p_{{i}}_{{j}}:" in out, out
    assert "2,250,001 cells" in out and "limit of 50,000" in out and "--max-cells" in out, out


def test_max_cells_sets_the_limit_for_validate_plan_and_run(tmp_path):
    # 1 model x (1 + 10 x 10 with i < j: 45) conditions x 1 readout x 1 seed = 46 cells (counted exactly)
    p = _write(tmp_path, HEAD + _sweep("p_{i}_{j}", "{i: {stop: 10}, j: {stop: 10}}", '["i < j"]'))
    for cmd in (["validate"], ["plan", "-o", str(tmp_path / "o")], ["run", "-o", str(tmp_path / "o")]):
        r = _invoke([*cmd, str(p), "--max-cells", "45"])
        assert r.exit_code == 1 and "up to 46 cells" in r.output and "limit of 45" in r.output, (cmd, r.output)
    assert _invoke(["validate", str(p), "--max-cells", "46"]).exit_code == 0
    r = _invoke(["plan", str(p), "--max-cells", "46", "-o", str(tmp_path / "o")])
    assert r.exit_code == 0 and "p_8_9" in r.output, r.output


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("c_{layer:>999999999}", "the placeholder `{layer:>999999999}`"),
        ("c_{layer!r}", "the placeholder `{layer!r}`"),
        ("c_{layer.real}", "the placeholder `{layer.real}`"),
        ("c_{0}_{layer}", "the placeholder `{0}`"),
        ("s_{}_{layer}", "an empty placeholder `{}`"),
        ("s_{layer", "an unmatched `{`"),
        ("s_layer}_{layer}", "an unmatched `}`"),
    ],
)
def test_a_sweep_name_is_plain_placeholders_only(tmp_path, name, fragment):
    p = _write(
        tmp_path, HEAD + _sweep(name, "{layer: [1, 2]}", interventions='[{kind: add, vector: v, layer: "{layer}"}]')
    )
    with pytest.raises(SpecError) as e:
        load_study(p)
    text = str(e.value)
    assert fragment in text and f"{p}:10:3: conditions." in text, text


def test_placeholders_in_interventions_are_filled_never_formatted():
    from mechsteer.spec.sweeps import substitute

    env = {"layer": 3}
    assert substitute(["{layer}", "x{layer}y", "{layer.__class__}", "{layer:>9}", "\\boxed{", "{{layer}}"], env) == [
        3,
        "x3y",
        "{layer.__class__}",
        "{layer:>9}",
        "\\boxed{",
        "{3}",
    ]


def test_where_over_mixed_types_is_a_located_error(tmp_path):
    p = _write(
        tmp_path,
        HEAD + _sweep("p_{i}_{j}", "{i: [0, a], j: [1, 2]}", '["i < j"]'),
    )
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1
    assert f"{p}:10:3: conditions.p_{{i}}_{{j}}" in r.output and "different types" in r.output, r.output


UNREADABLE = dict(
    zip(
        ["alias-bomb", "recursive-list", "recursive-map", "deep-composer", "deep", "list-key", "python-tag"],
        [
            (
                "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
                + "name: *i\n",
                "more than 100,000 values",
                ":",
            ),
            ("name: &a [*a]\n", "recursive alias", ":1:7"),
            ("name: &a {k: *a}\n", "recursive alias", ":1:7"),
            ("name: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than", ""),
            ("name: " + "[" * 80 + "]" * 80 + "\n", "nested more than 64", ":1:"),
            ("? [a, b]\n: 1\n", "a key must be a plain value", ":1:3"),
            ("name: !!python/object:os.system x\n", "cannot read this value", ":1:7"),
        ],
        strict=True,
    )
)
"""YAML that cannot be read within bounds: (text, what the error says, where it points after the file name)."""


@pytest.fixture(scope="module")
def unreadable_output(tmp_path_factory) -> tuple[dict[str, Path], str]:
    """Every UNREADABLE file (one folder each) and the output of one boxed `mechsteer validate` over all of
    them: the process's start-up is paid once, not once per case."""
    root = tmp_path_factory.mktemp("unreadable")
    paths = {}
    for name, (text, _, _) in UNREADABLE.items():
        (root / name).mkdir()
        paths[name] = _write(root / name, text)
    return paths, _validate_in_a_box(*paths.values())


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_yaml_that_cannot_be_read_in_bounds_is_a_located_error(unreadable_output, case):
    paths, out = unreadable_output
    _, fragment, where = UNREADABLE[case]
    p = paths[case]
    mine = [line for line in out.splitlines() if f"{p}{where}" in line]  # this file's own error line
    assert any(fragment in line for line in mine), out


def test_a_spec_file_larger_than_the_limit_is_refused(tmp_path):
    from mechsteer.spec.loader import MAX_SPEC_BYTES

    p = _write(tmp_path, HEAD + "#" * MAX_SPEC_BYTES)
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1 and "larger than" in r.output, r.output


def test_generation_length_must_fit_the_models_max_length(tmp_path):
    text = HEAD.replace("{id: smollm2-135m}", "{id: smollm2-135m, max_length: 256}").replace(
        "r: {kind: first_token, prompts: [hi]}", "r: {kind: generate, prompts: [hi], max_new_tokens: 256}"
    )
    p = _write(tmp_path, text)
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1
    assert "readouts.r.max_new_tokens" in r.output and "256" in r.output and "'m'" in r.output, r.output
    assert "max_length" in r.output
    p.write_text(text.replace("max_new_tokens: 256", "max_new_tokens: 255"))
    assert _invoke(["validate", str(p)]).exit_code == 0
    ev = text.replace("max_new_tokens: 256", "max_new_tokens: 8") + "evaluation: {tasks: [mini], max_new_tokens: 999}\n"
    p.write_text(ev)
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1 and "evaluation.max_new_tokens" in r.output and "999" in r.output, r.output


def test_limits_are_bounded(tmp_path):
    p = _write(tmp_path, HEAD.replace("prompts: [hi]", "task: mini, limit: 1000000000000"))
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1 and "readouts.r.limit" in r.output and "less than or equal to 1000000" in r.output
    p = _write(tmp_path, HEAD)
    r = _invoke(["plan", str(p), "--limit", "99999999999", "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--limit" in r.output


def test_an_api_limit_is_bounded_too(tmp_path):
    from mechsteer.api import load_study as api_load_study

    study = api_load_study(_write(tmp_path, HEAD))
    for bad in (0, -1, 10**7, 2.5, True):
        with pytest.raises(SpecError, match="limit"):
            study.plan(limit=bad, output_dir=tmp_path / "o")
    assert len(study.plan(limit=1, output_dir=tmp_path / "o").cells) == 1


def test_a_mini_limit_above_the_pool_takes_the_pool():
    from mechsteer.eval.lm_eval_tasks import load_problems
    from mechsteer.eval.mini_task import mini_pool

    assert len(load_problems("mini", None, 10_000)) == len(mini_pool("test"))


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("  base: []\n", "  " + "c" * 101 + ": []\n"), "at most 100 characters"),
        (("  m: {id", "  " + "m" * 101 + ": {id"), "at most 100 characters"),
        (("  base: []\n", '  "a\\tb": []\n'), "should match pattern"),
        (("name: t", "name: " + "t" * 101), "at most 100 characters"),
    ],
    ids=["condition", "model", "control-character", "study"],
)
def test_names_fit_in_file_names(tmp_path, edit, fragment):
    p = _write(tmp_path, HEAD.replace(*edit))
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 1 and fragment in r.output and f"{p}:" in r.output, r.output


def test_an_expanded_sweep_name_must_fit_too(tmp_path):
    long = "x" * 99
    p = _write(tmp_path, HEAD + _sweep("c_{v}", f"{{v: [a, {long}]}}"))
    with pytest.raises(MechsteerError) as e:
        load_study(p)
    assert "expands to the condition name" in str(e.value) and "at most 100" in str(e.value)


def test_bundled_studies_stay_within_the_default_limit():
    from pathlib import Path

    from bundled_studies import bundled_study

    from mechsteer.spec.bounds import DEFAULT_MAX_CELLS, cell_bound
    from mechsteer.spec.models import known_shape
    from mechsteer.spec.training import is_training_file

    studies = Path(__file__).resolve().parents[2] / "studies"
    largest = 0
    for f in sorted(studies.glob("*.yaml")):
        if is_training_file(f):
            continue
        for profile in [None, *bundled_study(f).spec.profiles]:
            ls = bundled_study(f, profile)
            shapes = {m: known_shape(ms.id, ls.base_dir) for m, ms in ls.spec.models.items()}
            largest = max(largest, cell_bound(ls.spec, shapes)[0])
    assert 1000 < largest <= DEFAULT_MAX_CELLS  # the paper-scale profiles are counted, and fit


def test_cell_bound_counts_the_plan():
    """The bound equals the compiled plan's cell count when nothing is restricted (where counted exactly)."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.spec.bounds import cell_bound
    from mechsteer.spec.loader import load_study_dict
    from mechsteer.spec.models import known_shape

    doc = {
        "name": "t",
        "models": {"a": {"id": "smollm2-135m"}, "b": {"id": "Qwen/Qwen2.5-Math-7B"}},
        "vectors": {"v": {"kind": "random", "norm": 1.0}},
        "conditions": {
            "base": [],
            "p_{i}_{j}": {
                "sweep": {"i": "layers", "j": [0, 1, 2]},
                "where": ["i < j"],
                "interventions": [{"kind": "add", "vector": "v", "layer": "{i}"}],
            },
        },
        "readouts": {
            "r": {"kind": "first_token", "prompts": ["hi"]},
            "g": {"kind": "generate", "prompts": ["hi"], "temperature": 1.0},
        },
        "seeds": [0, 1],
    }
    ls = load_study_dict(doc)
    plan = compile_study(ls, output_root="/nonexistent-outputs")
    shapes = {m: known_shape(ms.id, ls.base_dir) for m, ms in ls.spec.models.items()}
    assert cell_bound(ls.spec, shapes)[0] == len(plan.cells) == 2 * (1 + 3) * (1 + 2)


def test_a_condition_name_with_markup_is_printed_as_written(tmp_path):
    """Rich markup in user text: a file `run[abc].yaml` and a condition `base[/]` are shown, not parsed."""
    p = _write(tmp_path, HEAD + '  "base[/]": [{kind: add, vector: v, layer: 1}]\n', name="run[abc].yaml")
    r = _invoke(["validate", str(p)])
    assert r.exit_code == 0 and "run[abc].yaml" in r.output, r.output
    r = _invoke(["validate", str(tmp_path / "gone[abc].yaml")])
    assert r.exit_code == 1 and "gone[abc].yaml" in r.output, r.output
    r = _invoke(["plan", str(p), "-o", str(tmp_path / "o")])
    assert r.exit_code == 0 and "base[/]" in r.output, r.output
    bad = _write(
        tmp_path, HEAD.replace("base: []", 'base: [{kind: add, vector: "nope[/]", layer: 1}]'), name="b[x].yaml"
    )
    r = _invoke(["validate", str(bad)])
    assert r.exit_code == 1 and "b[x].yaml" in r.output and "nope[/]" in r.output, r.output


def test_the_progress_display_prints_condition_names_with_markup():
    """`run` printed each finished cell through rich: a condition `base[/]` crashed it after the first cell."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from mechsteer.progress import RichProgress

    buf = io.StringIO()
    cell = SimpleNamespace(
        model="m[b]", condition="base[/]", measurement=SimpleNamespace(id="readout:r[/x]"), seed=0, short="abc"
    )
    with RichProgress(1, console=Console(file=buf, width=200, force_terminal=False)) as prog:
        prog.start_cell(cell, 0, 1)
        prog.end_cell(cell, 1.0)
        prog.message("[/] done")
    assert "base[/]" in buf.getvalue() and "[/] done" in buf.getvalue()
