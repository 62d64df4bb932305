"""The training spec: shipped files validate in every profile, problems are located precisely, profiles
replace `setup`, the committed schema matches the models, and `mechsteer train` reports errors without a
traceback."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import REPO

from mechsteer.errors import SpecError
from mechsteer.spec.training import SingleLayerSetup, json_schema, load_train_spec, resolve_setup

STUDIES = ["studies/train_mini.yaml", "studies/train_paper.yaml", "studies/train_paper_llama.yaml"]


@pytest.mark.parametrize("name", STUDIES)
def test_shipped_training_files_validate_in_every_profile(name):
    path = REPO / name
    assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/train.schema.json")
    ls = load_train_spec(path)
    for profile in ls.spec.profiles:
        load_train_spec(path, profile)


def test_paper_file_holds_the_papers_values():
    s = load_train_spec(REPO / "studies/train_paper.yaml").spec
    r = s.rloo
    assert (r.group_size, r.prompts_per_step, r.steps, r.lr) == (16, 128, 314, 1e-3)
    assert (r.warmup_ratio, r.max_grad_norm, r.betas, r.eps, r.weight_decay) == (0.03, 2.0, (0.9, 0.999), 1e-8, 0.0)
    assert s.reward == "boxed" and s.data.id == "agentica-org/deep_scale_r-preview-dataset"
    single = load_train_spec(REPO / "studies/train_paper.yaml", "single_layer").spec
    assert isinstance(single.setup, SingleLayerSetup) and single.rloo.lr_per_layer[27] == 0.1
    assert single.rloo.lr_per_layer[23] == 1e-2


def test_profile_replaces_setup_and_merges_the_rest():
    s = load_train_spec(REPO / "studies/train_mini.yaml", "last").spec
    assert resolve_setup(s.setup, 30).layers == (29,)
    assert s.rloo.lr == 0.1 and s.rloo.group_size == 8 and s.rloo.max_new_tokens == 64
    assert load_train_spec(REPO / "studies/train_mini.yaml", "last").output_dir().name == "train_mini-last"


def _write(tmp_path, text):
    p = tmp_path / "t.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_problems_are_located_and_all_reported(tmp_path):
    p = _write(
        tmp_path,
        """\
        name: t
        model: {id: smollm2-135m}
        setup: {single_layr: 3}
        rloo:
          lrr: 0.1
          group_size: 1
        data: {kind: mini}
        """,
    )
    with pytest.raises(SpecError) as e:
        load_train_spec(p)
    lines = [pr.format() for pr in e.value.problems]
    text = "\n".join(lines)
    assert f"{p}:3:1: setup: unknown setup; expected `all_layers`" in text
    assert f"{p}:5:3: rloo.lrr: Extra inputs are not permitted" in text
    assert f"{p}:6:3: rloo.group_size: Input should be greater than or equal to 2" in text


def test_layer_and_lr_table_ranges_are_checked_against_the_model(tmp_path):
    p = _write(
        tmp_path,
        """\
        name: t
        model: {id: smollm2-135m}
        setup: {single_layer: 30}
        rloo: {max_new_tokens: 8, lr_per_layer: {40: 0.1}}
        data: {kind: mini}
        """,
    )
    with pytest.raises(SpecError) as e:
        load_train_spec(p)
    text = str(e.value)
    assert (
        "setup: layer 30 is out of range" in text
        and "4:42: rloo.lr_per_layer[40]: layer 40 is out of range for a model with 30 layers" in text
    )


def test_missing_length_and_missing_file(tmp_path):
    p = _write(
        tmp_path,
        """\
        name: t
        model: {id: smollm2-135m}
        data: {kind: jsonl, path: nope.jsonl}
        """,
    )
    with pytest.raises(SpecError) as e:
        load_train_spec(p)
    assert "data file not found" in str(e.value) and "no generation length" in str(e.value)


def test_committed_schema_matches_the_models():
    committed = json.loads((REPO / "schemas" / "train.schema.json").read_text())
    assert committed == json_schema()


def test_cli_prints_located_errors_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from mechsteer.cli.app import app

    p = _write(
        tmp_path,
        """\
        name: t
        model: {id: smollm2-135m}
        setup: everything
        data: {kind: mini}
        rloo: {max_new_tokens: 8}
        """,
    )
    res = CliRunner().invoke(app, ["train", str(p)])
    assert res.exit_code == 1
    assert f"{p}:3:1: setup:" in res.output and "Traceback" not in res.output
    ok = CliRunner().invoke(app, ["train", str(REPO / "studies/train_mini.yaml"), "--profile", "last", "--validate"])
    assert ok.exit_code == 0, ok.output
