"""Both real families in one study and on the circuit kinds, cheaply (two problems, a few tokens):

* a study that declares SmolLM2 and Gemma 3 at once, each steered through one `per_model` set, runs into one
  folder; its report names each model's intervention sites (on Gemma3, `add` is after
  post_feedforward_layernorm's residual add and not a down_proj bias), and `mechsteer diff FOLDER --models`
  pairs the two models on the shared problems;
* block surgery runs on the real Gemma3 blocks: steering Q, K and V of every head through the splice equals
  plain `add` of the same row at the block before (the splice's own identity), while Skip-Attn and Skip-Layer
  differ from it far beyond rounding."""

from __future__ import annotations

import math

import torch
import yaml
from gemma_model import TIER, gemma  # noqa: F401 - fixtures
from pydantic import TypeAdapter

import mechsteer as ms
from mechsteer.interventions import steering
from mechsteer.spec.layers import DepthRef, resolve_layers
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors import VectorSet

pytestmark = TIER
PROMPT = "Question: What is 3 + 4?\nAnswer:"


def test_one_folder_with_both_families(tmp_path):
    study = {
        "name": "families_tiny",
        "models": {
            "smol": {"id": "smollm2-135m", "dtype": "float32"},
            "gemma": {"id": "gemma3-270m", "dtype": "float32", "stop": ["\n"]},
        },
        "vectors": {
            "smol_v": {"kind": "random", "seed": 0, "norm": 1.0},
            "gemma_v": {"kind": "random", "seed": 0, "norm": 50.0},
            "v": {"kind": "per_model", "models": {"smol": "smol_v", "gemma": "gemma_v"}},
        },
        "conditions": {"base": [], "steered": [{"kind": "add", "vector": "v", "layer": {"depth": 0.5}}]},
        "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 2, "max_new_tokens": 4, "batch_size": 2},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    res = ms.load_study(tmp_path / "s.yaml").run(output_dir=tmp_path / "out", threads=1)
    rec = {m: res.record(model=m, condition="steered", measurement="mini") for m in ("smol", "gemma")}
    for model, n, norm in (("smol", 30, 1.0), ("gemma", 18, 50.0)):  # each model's own set, rows and norms
        v = rec[model]["vectors"]["v"]
        assert v["layers"] == list(range(n)) and all(abs(x - norm) < 1e-4 * norm for x in v["norms"].values())
        assert rec[model]["interventions"][0]["layer"] == resolve_layers(DepthRef(depth=0.5), n)[0]
    md = (res.output_dir / "report" / "report.md").read_text()
    (gemma_add,) = [line for line in md.splitlines() if line.startswith("- `gemma`, `add` (`steered`)")]
    assert "after post_feedforward_layernorm's residual add, so NOT a bias on block l's mlp.down_proj" in gemma_add
    (smol_add,) = [line for line in md.splitlines() if line.startswith("- `smol`, `add` (`steered`)")]
    assert "identical to a bias on block l's mlp.down_proj" in smol_add
    assert "Gemma3ForCausalLM" in md and "18 x 640" in md and "30 x 576" in md
    d = ms.diff(res.output_dir, models=("smol", "gemma"), n_boot=200)
    base = d.paired[(d.paired.condition == "base") & (d.paired.metric == "acc_lenient")].iloc[0]
    assert base.n_shared == 2 and (base.model, base.model_b) == ("smol", "gemma")
    assert d.model_ids["b"]["gemma"].endswith("Gemma3ForCausalLM, 18 blocks")


@torch.no_grad()
def test_surgery_runs_on_the_real_gemma3_blocks(gemma):  # noqa: F811
    model, n, d = gemma.model, gemma.shape.n_layers, gemma.shape.d_model
    ids = gemma.tokenizer([PROMPT], return_tensors="pt")["input_ids"]
    rows = torch.zeros(n, d)
    rows[n - 2] = torch.randn(d, generator=torch.Generator().manual_seed(0)) * 30.0
    vectors = {"pen": VectorSet(rows, [n - 2])}
    iv = TypeAdapter(InterventionSpec).validate_python

    def logits(*specs):
        with steering(model, gemma.adapter, [iv(s) for s in specs], vectors, tokenizer=gemma.tokenizer):
            return model(ids).logits[0, -1]

    base = model(ids).logits[0, -1]
    add = logits({"kind": "add", "vector": "pen", "layer": "penultimate"})
    through = logits({"kind": "qkv", "vector": "pen", "layer": "last", "proj": ["q", "k", "v"], "mode": "steer_only"})
    skip_attn = logits({"kind": "skip_attn", "vector": "pen", "layer": "last"})
    skip_layer = logits({"kind": "skip_layer", "vector": "pen", "layer": "last"})
    tol = 4 * torch.finfo(torch.float32).eps * base.abs().max().item() * math.sqrt(n * d)
    effect = (add - base).abs().max().item()
    assert effect > 1e3 * tol, "the vector must matter"
    assert (through - add).abs().max().item() <= tol, "all of Q, K, V steered through the splice is plain steering"
    for name, other in (("skip_attn", skip_attn), ("skip_layer", skip_layer)):
        assert (other - add).abs().max().item() > 1e2 * tol, f"{name} must differ from plain steering"
        assert torch.isfinite(other).all(), name
    assert not torch.equal(skip_attn, skip_layer)
