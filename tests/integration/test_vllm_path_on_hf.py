"""The vLLM evaluation path end to end without vLLM: `run_eval_vllm` compiles the condition into a checkpoint
and evaluates it through lm-eval; here lm-eval's engine is a plain HF model loaded from that checkpoint (no
hooks) instead of vLLM. Its completions and metrics must equal the hooked HF path's (`run_eval`)."""

from __future__ import annotations

import importlib.metadata

import torch
from conftest import make_tiny_model, register_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.eval import vllm_backend
from mechsteer.eval.lm_eval_bridge import SteeredHFLM
from mechsteer.eval.runner import run_eval
from mechsteer.interventions import steering
from mechsteer.measurement import MeasurementTask
from mechsteer.models.loading import load_model
from mechsteer.spec.kinds.eval_task import EvalTaskSpec
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.models import ModelSpec
from mechsteer.vectors import VectorSet


class _HFStandIn(SteeredHFLM):
    """lm-eval's HF model standing in for its vLLM model: the vLLM-only sampling fields are dropped (vLLM's
    stop ids are the same ids the HF bridge stops at)."""

    def _model_generate(self, context, max_length, stop, **kwargs):
        for key in ("stop_token_ids", "skip_special_tokens", "spaces_between_special_tokens"):
            kwargs.pop(key, None)
        return super()._model_generate(context, max_length, stop, **kwargs)


def test_compiled_condition_through_lm_eval_equals_the_hooked_run(tmp_path, monkeypatch):
    make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=512).save_pretrained(tmp_path / "m")
    make_tiny_tokenizer().save_pretrained(tmp_path / "m")
    lm = load_model("tiny", ModelSpec(id=str(tmp_path / "m"), dtype="float32", device="cpu", max_length=256))
    register_model(lm.model)
    g = torch.Generator().manual_seed(0)
    vs = VectorSet(torch.randn(4, 32, generator=g) * 3.0, [0, 1, 2, 3])
    ivs = [AddSpec(vector="v")]
    spec = EvalTaskSpec(task="mini", protocol="greedy", samples=1, limit=6, max_new_tokens=6, batch_size=6)

    def hf_engine(checkpoint, *, dtype, seed, max_length, batch_size="auto", **_):
        compiled = load_model("compiled", ModelSpec(id=checkpoint, dtype=dtype, device="cpu"))
        register_model(compiled.model)
        assert type(compiled.model).__name__ == "LlamaForCausalLM" and compiled.model.config.mlp_bias
        return _HFStandIn(compiled.model, compiled.tokenizer, None, batch_size=6, max_length=max_length)

    real_version = importlib.metadata.version
    monkeypatch.setattr(vllm_backend, "vllm_engine", hf_engine)
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "stand-in" if n == "vllm" else real_version(n))
    monkeypatch.setenv("MECHSTEER_CACHE", str(tmp_path / "cache"))
    with steering(lm.model, lm.adapter, ivs, {"v": vs}, tokenizer=lm.tokenizer) as ctx:
        hooked = run_eval(MeasurementTask(lm=lm, ctx=ctx, spec=spec, seed=0))
    with steering(lm.model, lm.adapter, [], {"v": vs}, tokenizer=lm.tokenizer) as ctx:  # vectors only, no hooks
        base = run_eval(MeasurementTask(lm=lm, ctx=ctx, spec=spec, seed=0))
        compiled = vllm_backend.run_eval_vllm(MeasurementTask(lm=lm, ctx=ctx, spec=spec, seed=0), ivs)

    def texts(r):
        return [s["filtered_resps"][0] for s in r.samples]

    assert texts(hooked) != texts(base), "the vector must change the completions"
    assert texts(compiled) == texts(hooked)
    assert compiled.metrics == hooked.metrics
    assert compiled.info["backend"] == "vllm" and compiled.info["stop_token_ids"] == hooked.info["stop_token_ids"]
