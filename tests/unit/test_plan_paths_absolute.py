"""Every path in a compiled plan is absolute: the output folder bound against the compiling process's working
directory, a `trained` set's default run folder against its training file's folder (never a working directory),
so a worker running in another folder (a Ray worker on a cluster) writes the cells and reads the run where the
driver meant, without reading the training file again. tests/integration/test_ray_cluster_paths.py checks the
same on a real cluster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from mechsteer.engine.plan import compile_study
from mechsteer.engine.vectors import BuildContext
from mechsteer.spec.loader import load_study
from mechsteer.vectors.vector_set import VectorSet, save_vector_set

TRAIN = """
name: tr
model: {id: smollm2-135m}
setup: all_layers
rloo: {steps: 2, max_new_tokens: 8}
data: {kind: mini}
"""

STUDY = """
name: s
models: {m: {id: smollm2-135m}}
vectors:
  t: {kind: trained, train: train.yaml}
  f: {kind: file, path: v.safetensors}
conditions: {base: [], steer: [{kind: add, vector: t}], file: [{kind: add, vector: f}]}
readouts: {r: {kind: first_token, prompts: [a]}}
"""


def test_a_plan_compiled_from_relative_paths_holds_only_absolute_ones(tmp_path, monkeypatch):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "train.yaml").write_text(textwrap.dedent(TRAIN))
    (tmp_path / "study" / "s.yaml").write_text(textwrap.dedent(STUDY))
    save_vector_set(VectorSet(torch.ones(30, 576), list(range(30))), tmp_path / "study" / "v.safetensors")
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    driver.mkdir(), worker.mkdir()

    monkeypatch.chdir(driver)
    plan = compile_study(load_study(Path("../study/s.yaml")), output_root="outputs")
    assert plan.output_dir == driver.resolve() / "outputs" / "s" and plan.cells_dir.is_absolute()
    assert Path(plan.spec_file).is_absolute()
    assert all(m.base_dir.is_absolute() for m in plan.models.values())
    for name, spec in plan.vectors.items():
        run = getattr(spec, "run", None)  # a trained set's located files
        for field, value in [(f, getattr(spec, f, None)) for f in ("path", "train", "output")] + [
            (f"run.{f}", getattr(run, f, None)) for f in ("output", "file")
        ]:
            assert value is None or Path(value).is_absolute(), (name, field, value)
    run = (tmp_path / "study").resolve() / "outputs" / "train" / "tr"  # next to the training file, not the cwd
    assert plan.vectors["t"].output == str(run)  # the default, bound
    assert plan.vectors["t"].run.file == str(run / "vectors.safetensors")

    rows = torch.zeros(30, 576)
    rows[7] = 3.0
    save_vector_set(VectorSet(rows, [7]), run / "vectors.safetensors")
    monkeypatch.chdir(worker)  # what a Ray worker sees: another working directory
    (tmp_path / "study" / "train.yaml").unlink()  # execution never reads the training file: the plan holds its files
    got = BuildContext(n_layers=30, d_model=576, specs=plan.vectors).get("t")
    assert got.layers == [7] and torch.equal(got.vectors[7], rows[7])
    assert not (worker / "outputs").exists()
