"""Vector sources added with training: lm-eval `steered` and GGUF control-vector import/export round trips,
their error paths, and `mean_diff` against a hand computation on a tiny model."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from tolerance import forward_ops, tolerance
from train_helpers import VOCAB, tiny_lm

from mechsteer.engine.vectors import BuildContext
from mechsteer.errors import VectorError
from mechsteer.vectors.io_formats import (
    load_gguf_control,
    load_lm_eval_steered,
    save_gguf_control,
    save_lm_eval_steered,
)
from mechsteer.vectors.vector_set import VectorSet


def _vs(layers=(1, 3, 5), n=6, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = torch.zeros(n, d)
    for i in layers:
        v[i] = torch.randn(d, generator=gen)
    return VectorSet(v, list(layers), {})


def _ctx(specs, tmp_path, n=6, d=8, lm=None):
    return BuildContext(n_layers=n, d_model=d, specs=specs, lm=lm)


def test_lm_eval_steered_round_trip_and_coefficient(tmp_path):
    from mechsteer.spec.kinds.vector_sources import LmEvalSteeredVectors

    vs = _vs()
    path = save_lm_eval_steered(vs, tmp_path / "v.pt", coefficient=2.0)
    raw = torch.load(path, weights_only=True)  # what lm-eval reads: plain tensors, numbers, strings
    assert set(raw) == {"layers.1", "layers.3", "layers.5"} and raw["layers.3"]["action"] == "add"
    back = load_lm_eval_steered(path, 6, 8)
    assert back.layers == vs.layers and torch.equal(back.vectors, vs.vectors * 2.0)
    spec = LmEvalSteeredVectors(path=str(tmp_path / "v.pt"), apply_coefficient=False, layers=[3, 5])
    built = _ctx({"x": spec}, tmp_path).get("x")
    assert built.layers == [3, 5] and torch.equal(built.vectors[3], vs.vectors[3])


def test_lm_eval_steered_rejects_what_add_cannot_express(tmp_path):
    good = {"steering_vector": torch.ones(8), "steering_coefficient": 1.0, "action": "add"}
    for bad, msg in [
        ({"layers.1": {**good, "action": "clamp"}}, "clamp"),
        ({"layers.1.mlp": good}, "not a decoder-block output"),
        ({"layers.1": {**good, "head_index": 2}}, "head_index"),
        ({"layers.9": good}, "do not exist"),
        ({"layers.1": {**good, "steering_vector": torch.ones(7)}}, "d_model"),
    ]:
        torch.save(bad, tmp_path / "b.pt")
        with pytest.raises(VectorError, match=msg):
            load_lm_eval_steered(tmp_path / "b.pt", 6, 8)


def test_lm_eval_steered_never_unpickles_objects(tmp_path):
    import datetime  # any pickled object outside tensors/containers/numbers/strings is refused

    torch.save(
        {"layers.1": {"steering_vector": torch.ones(8), "extra": datetime.date(2025, 9, 6)}}, tmp_path / "evil.pt"
    )
    with pytest.raises(VectorError, match="weights_only=True"):
        load_lm_eval_steered(tmp_path / "evil.pt", 6, 8)


def test_gguf_control_round_trip_scale_and_layer0(tmp_path):
    import gguf

    from mechsteer.spec.kinds.vector_sources import GgufControlVectors

    vs = _vs()
    path = save_gguf_control(vs, tmp_path / "v.gguf", model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.3", "direction.5"]
    back = load_gguf_control(path, 6, 8)
    assert back.layers == vs.layers and torch.equal(back.vectors, vs.vectors)
    assert back.meta["model_hint"] == "llama"
    built = _ctx({"g": GgufControlVectors(path=str(tmp_path / "v.gguf"), scale=-0.5)}, tmp_path).get("g")
    assert torch.equal(built.vectors, vs.vectors * -0.5)
    with pytest.raises(VectorError, match="direction.0"):
        save_gguf_control(_vs(layers=(0, 2)), tmp_path / "w.gguf")
    save_gguf_control(_vs(layers=(0, 2)), tmp_path / "w.gguf", include_layer0=True)
    assert load_gguf_control(tmp_path / "w.gguf", 6, 8).layers == [0, 2]
    with pytest.raises(VectorError, match="d_model"):
        load_gguf_control(path, 6, 9)


def _hand_block_outputs(model, ids: list[int]) -> list[torch.Tensor]:
    """hidden_states[l + 1] is the output of block l (for every block but the last), one prompt, no padding."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return [h[0].float() for h in out.hidden_states[1:-1]]


@pytest.mark.parametrize("position", ["last", "mean"])
def test_mean_diff_matches_hand_computation(position, tmp_path):
    from mechsteer.spec.kinds.vector_sources import MeanDiffVectors

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    pos, neg = ["what is 2 + 2?", "3 * 4 = ?", "calculate 9 + 1."], ["hello there", "a b c d e f g"]
    spec = MeanDiffVectors(positive=pos, negative=neg, layers=[0, 1, 2], position=position, batch_size=2)
    vs = BuildContext(n_layers=4, d_model=32, specs={"m": spec}, lm=lambda: lm).get("m")
    assert vs.layers == [0, 1, 2]

    size = [0.0]

    def side(texts):
        acc = [torch.zeros(32) for _ in range(3)]
        for t in texts:
            hs = _hand_block_outputs(lm.model, lm.tokenizer(t)["input_ids"])
            size[0] = max([size[0]] + [float(h.abs().max()) for h in hs])
            for layer in range(3):
                acc[layer] += hs[layer][-1] if position == "last" else hs[layer].mean(dim=0)
        return [a / len(texts) for a in acc]

    want = [p - n for p, n in zip(side(pos), side(neg))]
    # a difference of two means of float32 block outputs (batched and padded there, one prompt at a time here)
    tol = 2 * tolerance(torch.float32, size[0], forward_ops(lm.model))
    for layer in range(3):
        torch.testing.assert_close(vs.vectors[layer], want[layer], rtol=0, atol=tol, msg=f"layer {layer}")
    assert torch.equal(vs.vectors[3], torch.zeros(32))


def test_mean_diff_needs_the_model(tmp_path):
    from mechsteer.spec.kinds.vector_sources import MeanDiffVectors

    spec = MeanDiffVectors(positive=["a"], negative=["b"])
    with pytest.raises(VectorError, match="no model"):
        _ctx({"m": spec}, tmp_path).get("m")
    with pytest.raises(ValueError):
        MeanDiffVectors(positive=["a"])


def test_mean_diff_generations_contrasts_correct_and_incorrect():
    from mechsteer.builders.mean_diff import mean_diff_generations
    from mechsteer.sequences import SamplingSettings

    lm = tiny_lm(make_tiny_model("llama", vocab_size=VOCAB))
    problems = [{"answer": "x"}, {"answer": "y"}]
    ids = [lm.tokenizer("what is 1?")["input_ids"], lm.tokenizer("2 + 3 = ?")["input_ids"]]
    # "correct" = the completion starts with an even character id: both groups get tokens
    vs = mean_diff_generations(
        lm, problems, ids, [1, 3], SamplingSettings(4, 1.0, samples=4), grade=lambda text, gold: len(text) % 2 == 0
    )
    assert vs.layers == [1, 3] and vs.vectors[1].norm() > 0
    assert int(vs.meta["tokens_correct"]) > 0 and int(vs.meta["tokens_incorrect"]) > 0
    with pytest.raises(VectorError, match="both groups"):
        mean_diff_generations(
            lm, problems, ids, [1], SamplingSettings(2, 1.0, samples=2), grade=lambda text, gold: True
        )
