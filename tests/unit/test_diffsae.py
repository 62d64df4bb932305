"""DiffSAE: the TopK SAE against a known sparse dictionary, the correctness statistics against planted
features and brute-force formulas, the SAELens file format, the dF collector against an independent
computation (an explicit down_proj bias, run unpadded), shard size bounds, and exact training resume."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_model
from tolerance import assert_close, forward_ops, tolerance

from mechsteer.diffsae.collect import Graded, collect_diffs, load_index, load_layer, read_manifest
from mechsteer.diffsae.features import Encoded, analyse_features, benjamini_hochberg, feature_stats
from mechsteer.diffsae.sae import TopKSAE, load_saelens, save_saelens
from mechsteer.diffsae.train import SAETrainConfig, TokenSource, fold_scale, train_sae
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.sequences import SamplingSettings, Sequence
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.vectors import VectorSet

# ---------------------------------------------------------------------------------------------- synthetic data


def _dictionary(m=64, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, d, generator=g)
    return D / D.norm(dim=1, keepdim=True), g


def _sparse_data(n=4096, m=64, d=32, k=4, seed=0):
    """x = codes @ D with exactly k of m unit directions active per token, magnitudes in [0.5, 1.5]."""
    D, g = _dictionary(m, d, seed)
    idx = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(n)])
    codes = torch.zeros(n, m).scatter(1, idx, torch.rand(n, k, generator=g) + 0.5)
    return codes @ D, D


def _recovery(D: torch.Tensor, sae: TopKSAE) -> torch.Tensor:
    """Per ground-truth direction: the best cosine with any (unit-norm) decoder row."""
    W = sae.W_dec.detach()
    return (D @ (W / W.norm(dim=1, keepdim=True)).T).max(dim=1).values


def test_topk_sae_recovers_most_ground_truth_directions(tmp_path):
    x, D = _sparse_data()
    cfg = SAETrainConfig(width=128, k=4, lr=1e-3, tokens=1000 * 128, batch_size=128, dead_tokens=2048, log_every=250)
    untrained = TopKSAE(32, 128, 4)
    untrained.init_weights(torch.Generator().manual_seed(12345))
    assert float((_recovery(D, untrained) > 0.9).float().mean()) < 0.1  # the measure can fail
    res = train_sae(TokenSource.from_tensor(x, shard_size=1000), cfg, tmp_path)
    cos = _recovery(D, res.sae)
    frac = float((cos > 0.9).float().mean())
    print(
        f"recovered {frac:.1%} of 64 directions at cos > 0.9; median cos {float(cos.median()):.3f}; "
        f"explained variance {res.metrics['explained_variance']:.3f}; dead {res.metrics['dead_fraction']:.3f}"
    )
    assert frac >= 0.8
    assert res.metrics["explained_variance"] > 0.8 and res.metrics["nmse"] < 0.2
    # decoder rows are kept unit norm; the export in SAELens format reloads to the same SAE
    torch.testing.assert_close(
        res.sae.W_dec.norm(dim=1), torch.ones(128), rtol=0, atol=tolerance(torch.float32, 1.0, 32)
    )
    loaded, cfg_json = load_saelens(tmp_path / "sae")
    assert cfg_json["k"] == 4 and cfg_json["d_sae"] == 128
    assert torch.equal(loaded.W_enc, res.sae.W_enc) and torch.equal(loaded.b_dec, res.sae.b_dec)
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["explained_variance"] == pytest.approx(res.metrics["explained_variance"])


def _planted_sequences(n_seq=80, length=30, m=64, d=32, seed=1):
    """Sequences whose tokens carry 3 background features, plus: direction 0 on ~40% of the tokens of
    correct sequences only; direction 1 on ~40% of the tokens of a random half of all sequences."""
    D, g = _dictionary(m, d, seed)
    correct = torch.arange(n_seq) % 2 == 0
    indep = torch.rand(n_seq, generator=g) < 0.5
    xs, rows = [], []
    for s in range(n_seq):
        for p in range(length):
            act = torch.zeros(m)
            bg = 2 + torch.randperm(m - 2, generator=g)[:3]
            act[bg] = torch.rand(3, generator=g) + 0.5
            if correct[s] and torch.rand(1, generator=g) < 0.4:
                act[0] = 1.0 + float(torch.rand(1, generator=g))
            if indep[s] and torch.rand(1, generator=g) < 0.4:
                act[1] = 1.0 + float(torch.rand(1, generator=g))
            xs.append(act @ D)
            rows.append(
                {
                    "seq": s,
                    "problem": f"p{s}",
                    "sample": 0,
                    "position": p,
                    "gen_pos": p,
                    "is_generated": True,
                    "correct": bool(correct[s]),
                    "token_id": 3 + p,
                }
            )
    return torch.stack(xs), pd.DataFrame(rows), D, indep


def test_planted_correct_feature_tops_the_ranking_and_independent_one_is_not_significant(tmp_path):
    x, index, D, _ = _planted_sequences()
    cfg = SAETrainConfig(width=128, k=4, lr=3e-3, tokens=800 * 128, batch_size=128, dead_tokens=2048)
    sae = train_sae(TokenSource.from_tensor(x), cfg, tmp_path / "sae").sae
    W = sae.W_dec.detach()
    f_planted = int((W @ D[0]).argmax())
    f_indep = int((W @ D[1]).argmax())
    assert float(W[f_planted] @ D[0]) > 0.9 and float(W[f_indep] @ D[1]) > 0.9
    seqs = [
        {"seq": s, "problem": f"p{s}", "correct": s % 2 == 0, "prompt_ids": [], "generated_ids": list(range(3, 33))}
        for s in range(80)
    ]
    out = analyse_features(sae, x, index, seqs, tmp_path / "features", top_n=3)
    df = out["table"].set_index("feature")
    print(df.head(3)[["seq_freq_correct", "seq_freq_incorrect", "freq_diff", "q_bh"]])
    assert int(out["table"].iloc[0]["feature"]) == f_planted
    # it fires in every correct generation; the SAE's latent also fires weakly on a few tokens of incorrect
    # ones (random background directions in d=32 overlap it by cos ~0.4), so the gap is large, not total
    assert df.loc[f_planted, "seq_freq_correct"] > 0.9 and df.loc[f_planted, "freq_diff"] > 0.5
    assert df.loc[f_planted, "q_bh"] < 1e-6
    assert df.loc[f_indep, "q_bh"] > 0.05
    assert out["summary"]["top_correct"]["feature"] == f_planted
    for name in (
        "features.csv",
        "top_correct.csv",
        "top_incorrect.csv",
        "contexts.html",
        "frequencies.png",
        "summary.json",
    ):
        assert (tmp_path / "features" / name).is_file(), name
    assert f"feature {f_planted}:" in (tmp_path / "features" / "contexts.html").read_text()


# ---------------------------------------------------------------------------------------------- statistics


def test_benjamini_hochberg_matches_the_definition():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]))
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10)])
    m = len(p)
    rank = {i: r + 1 for r, i in enumerate(np.argsort(p, kind="stable"))}
    brute = [min(1.0, min(m * p[j] / rank[j] for j in range(m) if p[j] >= p[i])) for i in range(m)]
    np.testing.assert_allclose(benjamini_hochberg(p), brute)


def test_feature_stats_counts_by_hand():
    # 3 sequences of 2 generated tokens + 1 prompt token each; k = 2 codes per token; width 4
    index = pd.DataFrame(
        {
            "seq": [0, 0, 0, 1, 1, 1, 2, 2, 2],
            "position": [0, 1, 2] * 3,
            "is_generated": [False, True, True] * 3,
            "correct": [True] * 3 + [False] * 6,
        }
    )
    idx = np.array([[2, 3], [0, 1], [0, 3], [2, 3], [1, 3], [1, 3], [0, 2], [3, 1], [3, 2]])
    val = np.array([[5, 5], [1, 0], [2, 1], [4, 4], [1, 1], [0, 2], [9, 9], [1, 0], [1, 1.0]])
    df = feature_stats(Encoded(idx, val, 4), index).set_index("feature")
    # generated tokens only: seq0 fires {0} then {0,3}; seq1 {1,3} then {3}; seq2 {3} then {3,2}
    assert list(df.loc[3, ["n_seq_correct_fired", "n_seq_incorrect_fired"]]) == [1, 2]
    assert list(df.loc[0, ["n_seq_correct_fired", "n_seq_incorrect_fired"]]) == [1, 0]
    assert list(df.loc[3, ["n_tok_correct_fired", "n_tok_incorrect_fired"]]) == [1, 4]
    assert df.loc[0, "tok_freq_correct"] == 1.0 and df.loc[2, "seq_freq_incorrect"] == 0.5
    assert df.loc[0, "freq_diff"] == 1.0 and df.loc[1, "freq_diff"] == -0.5
    from scipy.stats import fisher_exact

    assert df.loc[1, "p_fisher"] == pytest.approx(fisher_exact([[0, 1], [1, 1]])[1])
    assert 2 in df.index and len(df) == 4  # feature 2 fires only in the prompt of seq 0 and gen of seq 2
    assert df.attrs["n_seq_correct"] == 1 and df.attrs["n_seq_incorrect"] == 2


def test_top_contexts_pick_the_strongest_token_per_sequence_with_its_window():
    from mechsteer.diffsae.features import contexts_html, top_contexts

    index = pd.DataFrame(
        {
            "seq": [0] * 4 + [1] * 3,
            "position": [0, 1, 2, 3, 0, 1, 2],
            "is_generated": [False, True, True, True, False, True, True],
            "correct": [True] * 4 + [False] * 3,
        }
    )
    idx = np.array([[5, 1], [5, 2], [1, 5], [5, 0], [5, 1], [2, 5], [5, 3]])
    val = np.array([[9.0, 1], [1, 1], [1, 3], [2, 1], [1, 1], [1, 4], [0.5, 1]])
    seqs = [
        {"seq": 0, "problem": "a", "correct": True, "prompt_ids": [10], "generated_ids": [11, 12, 13]},
        {"seq": 1, "problem": "b", "correct": False, "prompt_ids": [20], "generated_ids": [21, 22]},
    ]
    ctx = top_contexts(Encoded(idx, val, 8), index, seqs, 5, n=5, window=1)
    # generated tokens only: seq 1 position 1 (4.0) beats seq 0 position 2 (3.0); the prompt's 9.0 is skipped
    assert [(c["seq"], c["position"], c["activation"]) for c in ctx] == [(1, 1, 4.0), (0, 2, 3.0)]
    assert ctx[0]["token_ids"] == [20, 21, 22] and ctx[0]["acts"] == [1.0, 4.0, 0.5] and ctx[0]["center"] == 1
    assert ctx[1]["token_ids"] == [11, 12, 13] and ctx[1]["acts"] == [1.0, 3.0, 2.0]
    page = contexts_html([(5, "title", ctx)], lambda t: f"<t{t}>")
    assert "&lt;t21&gt;" in page and "rgb(230,120,20)" in page and "incorrect" in page  # the peak: full orange
    assert page.count("outline:") == 2  # each context's centre token


def test_feature_logit_lens_is_the_unembedding_of_the_normed_decoder_row():
    """The DiffSAE table uses the readouts' logit lens: top/bottom tokens of lm_head(final_norm(W_dec[f]))."""
    from mechsteer.diffsae.features import logit_lens_table

    m = make_tiny_model("llama")
    sae = TopKSAE(32, 8, 2)
    sae.init_weights(torch.Generator().manual_seed(3))
    with torch.no_grad():
        sae.W_dec.mul_(5.0)  # rows far from unit norm: the final norm must change the scores

    def norm(x):
        return m.model.norm(x.float()).double()

    def parsed(cell):  # "'5':1.23 | '17':0.98 | ..." -> ([5, 17, ...], [1.23, 0.98, ...])
        pairs = [p.rsplit(":", 1) for p in cell.split(" | ")]
        return [int(t.strip("'")) for t, _ in pairs], [float(v) for _, v in pairs]

    table = logit_lens_table(sae, [1, 6], m.lm_head.weight.detach(), norm, str, k=4)
    plain = logit_lens_table(sae, [1, 6], m.lm_head.weight.detach(), None, str, k=4)
    with torch.no_grad():
        normed_ref = m.lm_head(m.model.norm(sae.W_dec[[1, 6]]))
        plain_ref = sae.W_dec[[1, 6]] @ m.lm_head.weight.T
    for got, ref in ((table, normed_ref), (plain, plain_ref)):
        for r in range(2):
            for col, largest in (("top_tokens", True), ("bottom_tokens", False)):
                ids, vals = parsed(got.loc[r, col])
                want = ref[r].topk(4, largest=largest)
                assert ids == want.indices.tolist()
                assert vals == pytest.approx(want.values.tolist(), abs=0.006)  # printed with 2 decimals
    assert table.loc[0, "top_tokens"] != plain.loc[0, "top_tokens"]


# ---------------------------------------------------------------------------------------------- SAE format

SAELENS_TOPK_CFG_KEYS = {
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "metadata",
    "architecture",
    "k",
    "rescale_acts_by_decoder_norm",
}
"""TopKSAEConfig.to_dict() keys in SAELens 6.54.12 (sae_lens/saes/sae.py SAEConfig + topk_sae.py)."""


def test_saelens_format_round_trip(tmp_path):
    sae = TopKSAE(16, 40, 3)
    sae.init_weights(torch.Generator().manual_seed(3), b_dec=torch.randn(16))
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(40))
    save_saelens(sae, tmp_path / "s", {"model_name": "tiny", "hook_name": "model.layers.1.output"})
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert set(cfg) == SAELENS_TOPK_CFG_KEYS and cfg["architecture"] == "topk"
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6  # no pre-6.0 key renaming on load
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert {n: tuple(t.shape) for n, t in w.items()} == {
        "W_enc": (16, 40),
        "b_enc": (40,),
        "W_dec": (40, 16),
        "b_dec": (16,),
    }
    back, _ = load_saelens(tmp_path / "s")
    x = torch.randn(50, 16)
    acts = sae.encode(x)
    assert int((acts > 0).sum(-1).max()) <= 3 and bool((acts > 0).any())
    assert torch.equal(back.encode(x), acts)
    assert torch.equal(back.decode(acts), sae.decode(acts))
    # encode by hand: ReLU of the 3 largest of (x - b_dec) W_enc + b_enc
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    kth = pre.topk(3, dim=-1).values[:, -1:]
    terms = (x - sae.b_dec).abs() @ sae.W_enc.abs() + sae.b_enc.abs()
    assert_close(
        acts, torch.where(pre >= kth, pre.relu(), torch.zeros_like(pre)), tolerance(torch.float32, terms.max(), 16)
    )


def test_folding_the_input_scale_gives_the_raw_unit_sae():
    sae = TopKSAE(8, 20, 2)
    sae.init_weights(torch.Generator().manual_seed(0), b_dec=torch.randn(8))
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(20))
    x, c = torch.randn(30, 8), 7.5
    raw = fold_scale(sae, c)
    with torch.no_grad():  # the size of the terms: pre-activations, then the decoded sum of k=2 rows
        enc_terms = (x.abs() + sae.b_dec.abs() / c) @ sae.W_enc.abs() + sae.b_enc.abs() / c
        dec_terms = enc_terms.max() * 2 * sae.W_dec.abs().max() + sae.b_dec.abs().max() / c
    n = 8 + 20  # encode over d_in, decode over d_sae
    assert_close(raw.encode(x), sae.encode(x * c) / c, tolerance(torch.float32, enc_terms.max(), n))
    assert_close(raw(x), sae(x * c) / c, tolerance(torch.float32, dec_terms, n))


# ---------------------------------------------------------------------------------------------- collector


def _tiny_lm(model):
    adapter = adapter_for(model)
    return SimpleNamespace(
        model=model,
        adapter=adapter,
        shape=adapter.shape(model),
        device=torch.device("cpu"),
        tokenizer=SimpleNamespace(pad_token_id=0),
    )


def _sequences():
    g = torch.Generator().manual_seed(5)
    lens = [(5, 4), (3, 7), (8, 2)]
    return [
        Graded(
            Sequence(
                torch.randint(3, 97, (a,), generator=g).tolist(),
                torch.randint(3, 97, (b,), generator=g).tolist(),
                finished=False,
                prompt=i,
            ),
            problem=f"p{i}",
            correct=i != 1,
        )
        for i, (a, b) in enumerate(lens)
    ]


def _bias_reference(model, layer, vec):
    ref = copy.deepcopy(model)
    old = ref.model.layers[layer].mlp.down_proj
    new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.copy_(vec)
    ref.model.layers[layer].mlp.down_proj = new
    return ref


def test_collector_dF_is_zero_before_the_steered_layer_and_equals_an_independent_computation(tmp_path):
    m = make_tiny_model("llama")
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)) * 2, [0, 1, 2, 3])
    cond = [AddSpec(vector="v", layer=1)]
    seqs = _sequences()
    ids = torch.tensor([seqs[0].sequence.ids])
    with steering(m, adapter_for(m), cond, {"v": vs}):
        steered_logits = m(ids).logits
    assert (steered_logits - m(ids).logits).abs().max() > 1e-2, "steering must change the logits"

    manifest = collect_diffs(_tiny_lm(m), cond, {"v": vs}, seqs, [0, 1, 2], tmp_path / "c", batch_size=3)
    assert manifest["n_tokens"] == sum(len(s.sequence.ids) for s in seqs) == manifest["shards"][0]["n_tokens"]
    index = load_index(tmp_path / "c")
    assert index["seq"].tolist() == [i for i, s in enumerate(seqs) for _ in s.sequence.ids]
    assert index["token_id"].tolist() == [t for s in seqs for t in s.sequence.ids]
    assert index["is_generated"].tolist() == [
        p >= len(s.sequence.prompt_ids) for s in seqs for p in range(len(s.sequence.ids))
    ]
    assert index["correct"].tolist() == [s.correct for s in seqs for _ in s.sequence.ids]

    dF = {layer: load_layer(tmp_path / "c", layer) for layer in (0, 1, 2)}
    assert torch.equal(dF[0], torch.zeros_like(dF[0]))  # before the steered block: exactly nothing changes
    ref_model = _bias_reference(m, 1, vs.vectors[1])
    expected, size = {1: [], 2: []}, {1: 0.0, 2: 0.0}
    for s in seqs:  # unpadded, one sequence at a time: also checks the collector's padding
        t = torch.tensor([s.sequence.ids])
        hb = m(t, output_hidden_states=True).hidden_states
        hs = ref_model(t, output_hidden_states=True).hidden_states
        for layer in (1, 2):
            expected[layer].append((hs[layer + 1] - hb[layer + 1])[0])
            size[layer] = max(size[layer], float(hs[layer + 1].abs().max()), float(hb[layer + 1].abs().max()))
    # dF is a difference of two hidden states, each from two float32 forwards (collector vs reference): the
    # rounding is that of the hidden states, twice
    tol = {layer: 2 * tolerance(torch.float32, size[layer], forward_ops(m)) for layer in (1, 2)}
    for layer in (1, 2):
        assert_close(dF[layer], torch.cat(expected[layer]), tol[layer], f"layer {layer}")
    # at the steered block the same h either way: fl(h + v) - h, one rounding at the size of h + v
    assert_close(dF[1], vs.vectors[1].expand_as(dF[1]), tolerance(torch.float32, size[1]))
    assert dF[2].std(0).max() > 1e-3  # after the steered block dF varies from token to token

    gen_only = collect_diffs(_tiny_lm(m), cond, {"v": vs}, seqs, [2], tmp_path / "g", positions="generated")
    assert gen_only["n_tokens"] == sum(len(s.sequence.generated_ids) for s in seqs)
    # another batching (the default batch size): rounding apart
    assert_close(load_layer(tmp_path / "g", 2), dF[2][torch.tensor(index["is_generated"].tolist())], tol[2])


def test_shards_respect_the_size_bound_and_concatenate_to_the_same_data(tmp_path):
    m = make_tiny_model("llama")
    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(2)), [0, 1, 2, 3])
    cond, seqs = [AddSpec(vector="v", layer=[0, 2])], _sequences()
    bound = 4096 + 3 * 32 * 4 * 6  # header reserve + 6 tokens of 3 layers
    small = collect_diffs(
        _tiny_lm(m), cond, {"v": vs}, seqs, [1, 2, 3], tmp_path / "small", max_shard_bytes=bound, batch_size=2
    )
    # the same batches (the same kernels, bit for bit), only the shards differ
    big = collect_diffs(_tiny_lm(m), cond, {"v": vs}, seqs, [1, 2, 3], tmp_path / "big", batch_size=2)
    assert len(big["shards"]) == 1 and len(small["shards"]) == 5  # 29 tokens, 6 per shard
    assert [s["n_tokens"] for s in small["shards"]] == [6, 6, 6, 6, 5]
    for s in small["shards"]:
        assert (tmp_path / "small" / f"{s['name']}.safetensors").stat().st_size <= bound
    for layer in (1, 2, 3):
        assert torch.equal(load_layer(tmp_path / "small", layer), load_layer(tmp_path / "big", layer))
    assert load_index(tmp_path / "small").equals(load_index(tmp_path / "big"))
    assert read_manifest(tmp_path / "small")["n_tokens"] == 29
    with pytest.raises(Exception, match="cannot hold one token"):
        collect_diffs(_tiny_lm(m), cond, {"v": vs}, seqs, [1], tmp_path / "x", max_shard_bytes=4096)


# ---------------------------------------------------------------------------------------------- resume


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    x, _ = _sparse_data(n=1500, seed=3)
    src = lambda: TokenSource.from_tensor(x, shard_size=400)  # noqa: E731 - batches cross shard boundaries
    cfg = SAETrainConfig(
        width=64, k=4, lr=1e-3, tokens=60 * 96, batch_size=96, dead_tokens=300, checkpoint_every=20, log_every=10
    )
    full = train_sae(src(), cfg, tmp_path / "full")
    part = train_sae(src(), cfg, tmp_path / "resumed", stop_after=33)
    assert part.metrics["steps"] == 33 and not (tmp_path / "resumed" / "sae").exists()
    assert not torch.equal(part.sae.W_enc, full.sae.W_enc)
    resumed = train_sae(src(), cfg, tmp_path / "resumed")
    for n in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(resumed.sae, n), getattr(full.sae, n)), n
    assert resumed.log == full.log
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == [
        "step-000020",
        "step-000033",
        "step-000040",
        "step-000060",
    ]
    with pytest.raises(Exception, match="another config"):
        train_sae(src(), SAETrainConfig(**{**cfg.__dict__, "lr": 2e-3}), tmp_path / "resumed")


# ---------------------------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

    from mechsteer.models.loading import load_model
    from mechsteer.spec.models import ModelSpec

    d = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama", vocab_size=VOCAB_SIZE).save_pretrained(d)
    make_tiny_tokenizer().save_pretrained(d)
    lm = load_model("tiny", ModelSpec(id=str(d), dtype="float32", device="cpu"))
    from conftest import register_model

    register_model(lm.model)
    return lm


def test_generate_and_grade_keeps_the_sampled_ids_and_matches_generation(tiny_lm):
    from mechsteer.diffsae.collect import generate_and_grade
    from mechsteer.eval.grading import grade
    from mechsteer.generation import model_sampling, render_prompts, sample_texts

    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(4)) * 3, [0, 1, 2, 3])
    cond, vecs = [AddSpec(vector="v", layer=2)], {"v": vs}
    problems = [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    settings = model_sampling(tiny_lm, max_new_tokens=6, batch_size=2)
    graded = generate_and_grade(tiny_lm, cond, vecs, problems, settings)
    prompts = render_prompts(tiny_lm, [p["problem"] for p in problems], "qwen_math")
    with steering(tiny_lm.model, tiny_lm.adapter, cond, vecs, tokenizer=tiny_lm.tokenizer) as ctx:
        ref = sample_texts(tiny_lm, ctx, prompts, settings.replace(batch_size=3))
    base = sample_texts(tiny_lm, None, prompts, settings)
    assert [g.sequence for g in graded] != base, "steering must change the completions"
    assert [g.sequence for g in graded] == ref
    for g, p in zip(graded, problems):
        assert g.sequence.text(tiny_lm.tokenizer) == g.completion and g.problem == p["id"]
        assert g.correct == grade(g.completion, p["answer"]).lenient_correct
        assert tiny_lm.tokenizer.decode(g.sequence.prompt_ids).endswith("<|im_start|>assistant\n")


def test_run_diffsae_writes_every_stage(tiny_lm, tmp_path):
    from mechsteer.diffsae.run import DiffSAEConfig, run_diffsae

    vs = VectorSet(torch.randn(4, 32, generator=torch.Generator().manual_seed(4)), [0, 1, 2, 3])
    problems = [{"id": f"q{i}", "problem": f"{i}", "answer": str(i % 10)} for i in range(12)]
    cfg = DiffSAEConfig(
        sae=SAETrainConfig(width=16, k=2, tokens=40 * 32, batch_size=32, log_every=10),
        sampling=SamplingSettings(max_new_tokens=5, temperature=1.0, batch_size=4),
        batch_size=4,
        top_n=2,
        n_contexts=2,
        lens_k=3,
    )
    stages = []
    summary = run_diffsae(
        tiny_lm,
        [AddSpec(vector="v", layer="all")],
        {"v": vs},
        problems,
        [1, 3],
        cfg,
        tmp_path,
        progress=lambda stage, info: stages.append(stage),
    )
    assert [s for s in stages if s != "train_step"] == ["generate", "collect", "train", "features", "train", "features"]
    assert summary["n_sequences"] == 12 and summary["n_tokens"] == len(load_index(tmp_path / "collection"))
    for layer in (1, 3):
        sae, _ = load_saelens(tmp_path / f"layer_{layer}" / "sae")
        assert sae.d_in == 32 and sae.d_sae == 16
        assert (tmp_path / f"layer_{layer}" / "features" / "features.csv").is_file()
        assert summary["layers"][layer]["dF_norm_mean"] > 0
    # a second call reuses the collection and the finished SAEs (no generation, no training steps)
    stages.clear()
    again = run_diffsae(
        tiny_lm,
        [AddSpec(vector="v", layer="all")],
        {"v": vs},
        problems,
        [1, 3],
        cfg,
        tmp_path,
        progress=lambda stage, info: stages.append(stage),
    )
    assert "generate" not in stages and "train_step" not in stages
    assert again["layers"][1]["sae"]["explained_variance"] == summary["layers"][1]["sae"]["explained_variance"]
