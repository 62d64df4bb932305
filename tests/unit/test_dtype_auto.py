"""`dtype: auto`: float32 on CPUs without native bf16, bfloat16 on bf16-capable CPUs, explicit dtypes kept;
decided from /proc/cpuinfo flags (monkeypatched here) without torch on a CPU-only machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mechsteer import machine
from mechsteer.models import dtype as dt
from mechsteer.spec.models import ModelSpec

AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}
SAPPHIRE = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)


def test_auto_is_float32_on_avx2_only_cpu(monkeypatch, no_gpu):
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(AVX2_ONLY))
    name, reason = dt.resolve_dtype("auto", "cpu")
    assert name == "float32"
    assert "lacks native bfloat16" in reason
    assert dt.resolve_dtype("auto", "auto")[0] == "float32"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bfloat16_on_bf16_cpu(monkeypatch, no_gpu, flag):
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: AVX2_ONLY | {flag})
    name, reason = dt.resolve_dtype("auto", "auto")
    assert name == "bfloat16"
    assert flag in reason


def test_unreadable_flags_mean_float32(monkeypatch, no_gpu):
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: None)
    name, reason = dt.resolve_dtype("auto", "cpu")
    assert name == "float32" and "unreadable" in reason


def test_explicit_dtype_passes_through(monkeypatch):
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(SAPPHIRE))
    assert dt.resolve_dtype("float32", "cpu") == ("float32", "set in the study")
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(AVX2_ONLY))
    assert dt.resolve_dtype("bfloat16", "cpu") == ("bfloat16", "set in the study")
    with pytest.raises(ValueError, match="unknown dtype"):
        dt.resolve_dtype("int8", "cpu")


def test_cpuinfo_parser_reads_the_flags_line(tmp_path, monkeypatch):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    real_path = machine.Path
    monkeypatch.setattr(machine, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo" else real_path(p))
    assert machine.read_cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    fake.write_text("processor\t: 0\n")
    assert machine.read_cpu_flags() is None


def test_auto_is_the_default_and_loading_records_the_choice(monkeypatch, no_gpu):
    assert ModelSpec(id="x").dtype == "auto"
    import torch

    from mechsteer.models import loading

    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(AVX2_ONLY))
    assert loading.resolve_dtype("auto", "cpu")[0] == "float32"  # the function load_model calls
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(SAPPHIRE))
    name, _ = loading.resolve_dtype("auto", "cpu")
    assert loading.DTYPES[name] is torch.bfloat16


def test_load_model_records_dtype_and_reason(tmp_path, monkeypatch, no_gpu):
    from conftest import make_tiny_model, register_model
    from tiny_tokenizer import make_tiny_tokenizer

    from mechsteer.models.loading import load_model

    make_tiny_model("llama", vocab_size=99).save_pretrained(tmp_path)
    make_tiny_tokenizer().save_pretrained(tmp_path)
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(AVX2_ONLY))
    lm = load_model("m", ModelSpec(id=str(tmp_path), device="cpu"))
    register_model(lm.model)
    prov = lm.provenance()
    assert prov["dtype"] == "float32" and prov["dtype_requested"] == "auto"
    assert "lacks native bfloat16" in prov["dtype_reason"]
    assert str(next(lm.model.parameters()).dtype) == "torch.float32"
    monkeypatch.setattr(machine, "read_cpu_flags", lambda: set(SAPPHIRE))
    lm2 = load_model("m", ModelSpec(id=str(tmp_path), device="cpu"))
    register_model(lm2.model)
    assert lm2.provenance()["dtype"] == "bfloat16"
    assert str(next(lm2.model.parameters()).dtype) == "torch.bfloat16"


def test_cpu_decision_does_not_import_torch():
    code = (
        "import sys, mechsteer.machine as m, mechsteer.models.dtype as d; m.nvidia_gpu_present = lambda: False; "
        "print(d.resolve_dtype('auto', 'auto')[0], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] in ("float32", "bfloat16")
    assert out[1] == "False"
