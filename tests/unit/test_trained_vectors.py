"""The `trained` vector kind reads what `mechsteer train` wrote (final vectors or a checkpoint), validates the
training file up front, and names the command to run when the output is missing."""

from __future__ import annotations

import textwrap

import pytest
import torch

from mechsteer.engine.plan import bind_vectors, vector_fingerprint
from mechsteer.engine.vectors import BuildContext
from mechsteer.errors import SpecError, VectorError
from mechsteer.spec.loader import load_study
from mechsteer.vectors.vector_set import VectorSet, save_vector_set

TRAIN = """
name: tr
model: {id: smollm2-135m}
setup: all_layers
rloo: {steps: 2, max_new_tokens: 8}
data: {kind: mini}
output: runs/tr
profiles:
  last: {setup: {single_layer: last}, output: runs/tr-last}
"""

STUDY = """
name: s
models: {m: {id: smollm2-135m}}
vectors:
  v: {kind: trained, train: train.yaml, profile: last}
  c: {kind: trained, train: train.yaml, checkpoint: 2}
conditions: {base: [], steer: [{kind: add, vector: v}]}
readouts: {r: {kind: first_token, prompts: [a]}}
"""


def _setup(tmp_path):
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "s.yaml").write_text(textwrap.dedent(STUDY))
    return load_study(tmp_path / "s.yaml")


def test_missing_output_names_the_command_and_a_written_one_is_read(tmp_path):
    ls = _setup(tmp_path)
    vectors = bind_vectors(ls)
    ctx = BuildContext(n_layers=30, d_model=576, specs=vectors)
    with pytest.raises(VectorError, match=r"mechsteer train .*train.yaml --profile last"):
        ctx.get("v")
    missing = vector_fingerprint(vectors, "v")
    rows = torch.zeros(30, 576)
    rows[29] = torch.arange(576.0)
    save_vector_set(VectorSet(rows, [29]), tmp_path / "runs" / "tr-last" / "vectors.safetensors")
    vs = BuildContext(n_layers=30, d_model=576, specs=vectors).get("v")
    assert vs.layers == [29] and torch.equal(vs.vectors[29], rows[29])
    assert vector_fingerprint(vectors, "v") != missing  # the finished run changes the cells that read it
    ckpt = tmp_path / "runs" / "tr" / "checkpoints" / "step-000002" / "vectors.safetensors"
    save_vector_set(VectorSet(rows * 2, [29]), ckpt)
    assert torch.equal(BuildContext(n_layers=30, d_model=576, specs=vectors).get("c").vectors[29], rows[29] * 2)


def test_a_broken_training_file_is_a_located_study_problem(tmp_path):
    _setup(tmp_path)
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN).replace("setup: all_layers", "setup: sideways"))
    with pytest.raises(
        SpecError, match=r"s.yaml:6:\d+: vectors.c.train: the training file does not validate: .*train.yaml:4:1: setup"
    ):
        load_study(tmp_path / "s.yaml")


def test_the_compiler_locates_the_files_and_execution_reads_only_those(tmp_path):
    """`bind` reads the training file and best.json once; building reads neither (a missing selection is
    the build's error, named as before), an unbound spec is refused, and a study cannot set the bound run."""
    from pydantic import TypeAdapter, ValidationError

    from mechsteer.spec.study import VectorSpec

    ls = _setup(tmp_path)
    (tmp_path / "s.yaml").write_text(textwrap.dedent(STUDY).replace("checkpoint: 2", "checkpoint: best"))
    vectors = bind_vectors(load_study(tmp_path / "s.yaml"))  # compiles: best.json may come later
    assert vectors["c"].run.file is None and "best.json" in vectors["c"].run.problem[0]
    assert vector_fingerprint(vectors, "c")["file_sha256"] == "missing"
    with pytest.raises(VectorError, match=r"no best.json.*eval.select"):
        BuildContext(n_layers=30, d_model=576, specs=vectors).get("c")
    assert vectors["v"].run.file == str(tmp_path / "runs" / "tr-last" / "vectors.safetensors")
    with pytest.raises(VectorError, match="not bound to their files"):
        BuildContext(n_layers=30, d_model=576, specs={"v": ls.spec.vectors["v"]}).get("v")
    with pytest.raises(ValidationError, match="filled in by the compiler"):
        TypeAdapter(VectorSpec).validate_python(
            {"kind": "trained", "train": "t.yaml", "run": {"output": "x", "command": "y"}}
        )


PER_BLOCK_STUDY = """
name: s
models: {m: {id: smollm2-135m}}
vectors:
  stack: {kind: trained, train: train.yaml, profile: last, per_block: [3, 29], checkpoint: best}
conditions: {base: [], steer: [{kind: add, vector: stack}]}
readouts: {r: {kind: first_token, prompts: [a]}}
"""


def test_per_block_stacks_each_blocks_own_run_and_names_the_missing_ones(tmp_path):
    import json

    from mechsteer.engine.plan import vector_fingerprint

    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "s.yaml").write_text(textwrap.dedent(PER_BLOCK_STUDY))
    out = tmp_path / "runs" / "tr-last"

    def compiled():  # the plan locates the finished runs when it is compiled (a new plan sees new runs)
        return bind_vectors(load_study(tmp_path / "s.yaml"))

    def finish(k, best_step, value):
        run = out / f"layer-{k:02d}"
        rows = torch.zeros(30, 576)
        for step in (2, 4):  # two checkpoints; best.json picks one
            rows[k] = torch.full((576,), float(10 * k + step))
            save_vector_set(
                VectorSet(rows.clone(), [k]), run / "checkpoints" / f"step-{step:06d}" / "vectors.safetensors"
            )
        (run / "best.json").write_text(json.dumps({"step": best_step, "value": value}))

    finish(3, 4, 0.5)
    bound = compiled()
    (tmp_path / "train.yaml").rename(tmp_path / "train.yaml.away")  # naming the missing blocks reads no YAML
    with pytest.raises(
        VectorError,
        match=r"1 of 2 per-block runs .*blocks \[29\].*`mechsteer train \S*train.yaml --profile last --per-block 29 "
        r"--lr-rule file`",
    ):
        BuildContext(n_layers=30, d_model=576, specs=bound).get("stack")
    (tmp_path / "train.yaml.away").rename(tmp_path / "train.yaml")
    partial = vector_fingerprint(compiled(), "stack")
    finish(29, 2, 0.25)
    vectors = compiled()
    assert vector_fingerprint(vectors, "stack") != partial  # a newly finished block changes the cells
    vs = BuildContext(n_layers=30, d_model=576, specs=vectors).get("stack")
    assert vs.layers == [3, 29]
    assert torch.equal(vs.vectors[3], torch.full((576,), 34.0))  # block 3's best = step 4
    assert torch.equal(vs.vectors[29], torch.full((576,), 292.0))  # block 29's best = step 2
    assert vs.vectors[[i for i in range(30) if i not in (3, 29)]].abs().sum() == 0


def test_lora1_from_a_training_run_binds_its_output_and_names_the_command_when_missing(tmp_path):
    from mechsteer.engine.plan import compile_study
    from mechsteer.errors import CompileError
    from mechsteer.interventions.lora1 import attach_lora1

    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(
            """
            name: s
            models: {m: {id: smollm2-135m}}
            conditions: {base: [], lora: [{kind: lora1, train: train.yaml, profile: last}]}
            readouts: {r: {kind: first_token, prompts: [a]}}
            """
        )
    )
    plan = compile_study(load_study(tmp_path / "s.yaml"), output_root=tmp_path / "out")
    iv = next(c for c in plan.cells if c.condition == "lora").interventions[0]
    assert iv.path == str((tmp_path / "runs" / "tr-last" / "lora1.safetensors").absolute())
    with pytest.raises(CompileError, match=r"not there.*mechsteer train .*train.yaml --profile last"):
        attach_lora1(iv, None)
    (tmp_path / "bad.yaml").write_text(
        "name: b\nmodels: {m: {id: smollm2-135m}}\nconditions: {x: [{kind: lora1, path: a.st, train: train.yaml}]}\n"
        "readouts: {r: {kind: first_token, prompts: [a]}}\n"
    )
    with pytest.raises(SpecError, match="not both or neither"):
        load_study(tmp_path / "bad.yaml")


def test_a_per_block_lora1_names_its_blocks_run_and_command_without_reading_the_training_file(tmp_path):
    """`per_block` reads block `layer`'s own run (layer-KK/), and the command that trains it (with the training
    file's lr rule) is named at compile time: attaching a missing adapter reads no YAML. A study cannot set it."""
    from mechsteer.engine.plan import compile_study
    from mechsteer.errors import CompileError
    from mechsteer.interventions.lora1 import attach_lora1

    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    study = """
        name: s
        models: {m: {id: smollm2-135m}}
        conditions: {base: [], lora: [{kind: lora1, train: train.yaml, profile: last, per_block: true, layer: 7}]}
        readouts: {r: {kind: first_token, prompts: [a]}}
        """
    (tmp_path / "s.yaml").write_text(textwrap.dedent(study))
    plan = compile_study(load_study(tmp_path / "s.yaml"), output_root=tmp_path / "out")
    iv = next(c for c in plan.cells if c.condition == "lora").interventions[0]
    assert iv.path == str((tmp_path / "runs" / "tr-last" / "layer-07" / "lora1.safetensors").absolute())
    (tmp_path / "train.yaml").unlink()
    with pytest.raises(CompileError, match=r"not there.*--profile last --per-block 7 --lr-rule file`"):
        attach_lora1(iv, None)
    (tmp_path / "s.yaml").write_text(textwrap.dedent(study).replace("layer: 7}", "layer: 7, command: x}"))
    with pytest.raises(SpecError, match="filled in by the compiler"):
        load_study(tmp_path / "s.yaml")
