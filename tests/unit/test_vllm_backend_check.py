"""`backend: vllm` on a machine without vLLM or without an NVIDIA GPU fails at validate time with one line
naming the model entry and what is missing; `hf` (the default) and a machine with both pass."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mechsteer import machine
from mechsteer.cli.app import app
from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study

STUDY = """name: vl
models:
  smol: {{id: smollm2-135m{backend}}}
vectors:
  v: {{kind: zeros}}
conditions:
  base: []
  steer: [{{kind: add, vector: v}}]
evaluation: {{tasks: [mini], protocol: greedy, limit: 4}}
"""


def _study(tmp_path, backend: str | None):
    f = tmp_path / "s.yaml"
    f.write_text(STUDY.format(backend=f", backend: {backend}" if backend else ""))
    return f


@pytest.fixture
def bare_machine(monkeypatch):
    monkeypatch.setattr(machine, "vllm_installed", lambda: False)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)


def test_vllm_without_vllm_or_gpu_fails_validate_in_one_line(tmp_path, bare_machine):
    f = _study(tmp_path, "vllm")
    with pytest.raises(SpecError) as e:
        load_study(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert "models.smol.backend" in msg and f"{f}:3:" in msg
    assert "vllm package is not installed" in msg and "no NVIDIA GPU" in msg and "backend: hf" in msg
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert r.exit_code == 1
    assert "backend vllm cannot run here" in r.output and "Traceback" not in r.output


def test_each_missing_piece_is_named(tmp_path, monkeypatch):
    f = _study(tmp_path, "vllm")
    monkeypatch.setattr(machine, "vllm_installed", lambda: True)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)
    with pytest.raises(SpecError, match="no NVIDIA GPU is visible") as e:
        load_study(f)
    assert "not installed" not in str(e.value)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert load_study(f).spec.models["smol"].backend == "vllm"


def test_hf_and_default_backends_validate_anywhere(tmp_path, bare_machine):
    assert load_study(_study(tmp_path, None)).spec.models["smol"].backend is None
    assert load_study(_study(tmp_path, "hf")).spec.models["smol"].backend == "hf"


def test_cuda_visible_devices_empty_hides_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine.nvidia_gpu_present() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert machine.nvidia_gpu_present() is False


def test_no_problem_when_vllm_and_gpu_are_there(monkeypatch):
    monkeypatch.setattr(machine, "vllm_installed", lambda: True)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert machine.vllm_problem() is None
    monkeypatch.setattr(machine, "vllm_installed", lambda: False)
    assert machine.vllm_problem() == "backend vllm cannot run here: the vllm package is not installed"
