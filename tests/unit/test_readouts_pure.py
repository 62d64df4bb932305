"""The pure readout functions (mechsteer/readouts/{persistence,logit_lens,token_shift,non_english,
vector_stats,tokenwise,plots}.py) against hand-computed answers and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from pydantic import TypeAdapter
from tolerance import tolerance

from mechsteer.capture import Capture, layer_sites
from mechsteer.hooks import HookScope
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.readouts import logit_lens as ll
from mechsteer.readouts import non_english as ne
from mechsteer.readouts import persistence as pe
from mechsteer.readouts import plots
from mechsteer.readouts import token_shift as ts
from mechsteer.readouts import tokenwise as tw
from mechsteer.readouts import vector_stats as vst
from mechsteer.spec.study import InterventionSpec
from mechsteer.vectors.vector_set import VectorSet

_IV = TypeAdapter(InterventionSpec)
S2 = 1 / math.sqrt(2)


# ------------------------------------------------------------------------------------------- persistence


def test_persistence_synthetic_by_hand():
    vectors = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # s_0 = (0, 1) is the source, s_1 = (1, 0) the target's
    d1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]])  # sample 1: third position masked out
    d2 = torch.tensor([[[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])  # sample 2: third position is padding
    mask1, mask2 = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 0]])
    acc = pe.PersistenceAccumulator(vectors)
    acc.update(0, 1, d1, mask1)  # two chunks ...
    acc.update(0, 1, d2, mask2)
    one = pe.PersistenceAccumulator(vectors)
    one.update(0, 1, torch.cat([d1, d2]), torch.cat([mask1, mask2]))  # ... equal one chunk
    row = acc.finalize().iloc[0]
    assert row["dv"] == pytest.approx((0.5 + 1.0) / 2)  # sample 1: mean(1, 0); sample 2: 1
    assert row["dd"] == pytest.approx((S2 + 1.0) / 2)  # sample 1 mean (0.5, 0.5): cos 1/sqrt2 for both tokens
    assert row["lm"] == pytest.approx(5 / math.sqrt(26))  # sum (5, 1) / 4 tokens vs (1, 0)
    assert row["self_cos"] == pytest.approx((0.5 + 0.0) / 2)
    assert (row["n_samples"], row["n_tokens"]) == (2, 4)
    assert row["mean_norm"] == pytest.approx((1 + 1 + 2 + 2) / 4)
    torch.testing.assert_close(acc.mean_shift(0, 1), torch.tensor([1.25, 0.25], dtype=torch.float64))
    f1 = one.finalize()
    for c in pe.METRICS:
        assert f1[c].iloc[0] == pytest.approx(row[c])


def test_persistence_of_an_injected_vector_on_a_tiny_model():
    """s_l injected at l: dF = 0 exactly for j < l (metrics NaN), DV = DD = LM = self = 1 at j = l; later
    targets equal a direct per-sample computation."""
    model = make_tiny_model("qwen2")
    ad = adapter_for(model)
    ids = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    stack = torch.randn(4, 32, generator=torch.Generator().manual_seed(6))
    vs, src = VectorSet(stack, [0, 1, 2, 3]), 1
    sites = layer_sites("resid_post", range(4))
    with torch.no_grad():
        with HookScope() as scope:
            base = Capture(model, ad, sites).attach(scope)
            model(input_ids=ids, attention_mask=mask)
        with steering(model, ad, [_IV.validate_python(dict(kind="add", vector="v", layer=src))], {"v": vs}) as ctx:
            st = Capture(model, ad, sites).attach(ctx.scope)
            model(input_ids=ids, attention_mask=mask)
    acc = pe.PersistenceAccumulator(stack)
    dfs = {}
    for j in range(4):
        dfs[j] = st.last[("resid_post", j)] - base.last[("resid_post", j)]
        acc.update(src, j, dfs[j], mask)
    assert float(dfs[0].abs().max()) == 0.0
    assert float(dfs[2].abs().max()) > 1e-2
    tab = acc.finalize().set_index("target")
    assert tab.loc[0, ["dv", "dd", "lm", "self_cos"]].isna().all()
    # at the source dF = fl(h + v) - h = v + e, |e| <= one float32 rounding of h + v, so each cosine with v is
    # 1 - (|e| / |v|)^2 / 2 or closer (plus the float64 rounding of the accumulator)
    h_v = st.last[("resid_post", src)].abs().max()
    e = tolerance(torch.float32, h_v, 32) / float(stack[src].norm())
    for c in ("dv", "dd", "lm", "self_cos"):
        assert tab.loc[src, c] == pytest.approx(1.0, abs=e**2 / 2 + tolerance(torch.float64, 1.0, 6 * 32))
    cos = torch.nn.functional.cosine_similarity
    f64 = tolerance(torch.float64, 1.0, int(mask.sum()) * 32)  # the same float32 dF, summed in float64 either way
    for j in (2, 3):
        d = dfs[j].double()
        dv, dd = [], []
        for r in range(2):
            x = d[r][mask[r].bool()]
            dv.append(cos(x, stack[j].double().expand_as(x), dim=-1).mean())
            dd.append(cos(x, x.mean(0).expand_as(x), dim=-1).mean())
        assert tab.loc[j, "dv"] == pytest.approx(float(sum(dv) / 2), abs=f64)
        assert tab.loc[j, "dd"] == pytest.approx(float(sum(dd) / 2), abs=f64)
        lm = cos(d[mask.bool()].mean(0), stack[j].double(), dim=0)
        assert tab.loc[j, "lm"] == pytest.approx(float(lm), abs=f64)
    m = pe.matrix(acc.finalize(), "dv")
    assert m.shape == (1, 4) and m.loc[src, 2] == pytest.approx(tab.loc[2, "dv"])


# ------------------------------------------------------------------------------------------- vector stats


def test_vector_stats_by_hand_and_against_numpy():
    rank1 = torch.outer(torch.tensor([1.0, -2.0, 3.0]), torch.randn(8, generator=torch.Generator().manual_seed(0)))
    assert vst.stable_rank(rank1) == pytest.approx(1.0)
    assert vst.stable_rank(torch.eye(4) * 3.0) == pytest.approx(4.0)
    a = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    s = np.linalg.svd(a.double().numpy(), compute_uv=False)
    assert vst.stable_rank(a) == pytest.approx(float((s**2).sum() / s[0] ** 2))
    # backward-stable SVDs (float64): singular values agree to rounding at the size of the largest
    np.testing.assert_allclose(vst.singular_values(a)["sigma"], s, rtol=0, atol=tolerance(torch.float64, s[0], 5 * 7))
    an = a.double().numpy()
    want = (an @ an.T) / np.outer(np.linalg.norm(an, axis=1), np.linalg.norm(an, axis=1))
    got = vst.cosine_matrix(a, labels=[3, 4, 5, 6, 7]).to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance(torch.float64, 1.0, 3 * 7))
    b = a.clone()
    b[1] *= -2.0
    al = vst.alignment(a, b)
    assert al["cos"].tolist() == pytest.approx([1, -1, 1, 1, 1])
    assert al["norm_ratio"][1] == pytest.approx(2.0)
    st = vst.vector_stats(rank1)
    assert st["summary"]["stable_rank"][0] == pytest.approx(1.0)
    assert st["summary"]["mean_offdiag_cos"][0] == pytest.approx(-1 / 3)  # signs (+,-,+): pairs -1, +1, -1


# ------------------------------------------------------------------------------------------- logit lens


def test_logit_lens_one_hot_through_identity_unembedding():
    tokens = ["a", "b", "c", "d", "e"]
    x = torch.zeros(2, 5)
    x[0, 3] = 2.0
    x[1, 1] = -1.0
    df = ll.logit_lens(x, torch.eye(5), tokens, k=1, norm=ll.rms_norm(torch.ones(5), 1e-6))
    top = df[(df["end"] == "top") & (df["rank"] == 0)]
    assert set(top[top["layer"] == 0]["token"]) == {"d"}  # every metric, with and without the norm
    assert len(top[top["layer"] == 0]) == 6
    bottom = df[(df["end"] == "bottom") & (df["layer"] == 1)]
    assert set(bottom["token"]) == {"b"}
    cos_row = df[(df.metric == "cos") & (df.layer == 0) & (df.end == "top") & (~df.normed)]
    assert cos_row["value"].iloc[0] == pytest.approx(1.0)
    prob = df[(df.metric == "prob") & (df.layer == 0) & (df.end == "top") & (~df.normed)]["value"].iloc[0]
    assert prob == pytest.approx(math.exp(2) / (math.exp(2) + 4))


def test_logit_lens_scores_against_numpy():
    g = torch.Generator().manual_seed(2)
    v, w, wt = torch.randn(3, 6, generator=g), torch.randn(10, 6, generator=g), torch.rand(6, generator=g) + 0.5
    vn, wn = v.double().numpy(), w.double().numpy()
    cos = (vn / np.linalg.norm(vn, axis=1, keepdims=True)) @ (wn / np.linalg.norm(wn, axis=1, keepdims=True)).T
    np.testing.assert_allclose(ll.scores(v, w, "cos").numpy(), cos, rtol=0, atol=tolerance(torch.float64, 1.0, 3 * 6))
    normed = vn / np.sqrt((vn**2).mean(1, keepdims=True) + 1e-5) * wt.double().numpy()
    terms = np.abs(normed) @ np.abs(wn).T  # the dot products before cancellation
    f64 = tolerance(torch.float64, terms.max(), 2 * 6)
    np.testing.assert_allclose(ll.scores(v, w, "dot", ll.rms_norm(wt, 1e-5)).numpy(), normed @ wn.T, rtol=0, atol=f64)
    # the model's own RMSNorm module as the callable gives the same
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    mod = LlamaRMSNorm(6, eps=1e-5)
    mod.weight.data = wt
    f32 = tolerance(torch.float32, terms.max(), 2 * 6)  # the module normalises in float32
    np.testing.assert_allclose(ll.scores(v, w, "dot", mod).numpy(), normed @ wn.T, rtol=0, atol=f32)
    df = ll.logit_lens(v, w, [str(i) for i in range(10)], k=3, metrics=("dot",))
    assert df[(df.layer == 2) & (df.end == "top")]["token_id"].tolist() == list(np.argsort(-(vn @ wn.T)[2])[:3])


def test_unembedding_bias_tables():
    u = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = ll.unembedding_bias(u, torch.eye(3), ["x", "y", "z"], k=1, sources=[5, 6, 7])
    assert out["cosine"].loc[5, 6] == pytest.approx(S2)
    assert math.isnan(out["cosine"].loc[7, 5])
    assert out["norms"]["norm"].tolist() == pytest.approx([1, math.sqrt(2), 0])


# ------------------------------------------------------------------------------------------- token shift


def test_kl_and_entropy_closed_form():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.9, 0.05, 0.05])
    lp, lq = p.log(), q.log()
    assert float(ts.kl_divergence(lp, lq)) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.05))
    assert float(ts.kl_divergence(lq, lq)) == 0.0
    assert float(ts.entropy(lp)) == pytest.approx(math.log(2))


def test_generated_positions_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    # prompt length 2: position 1 predicts generated token 0; the last real position predicts nothing
    assert ts.generated_positions(right, [2, 2]).tolist() == [[-1, 0, 1, 2, -1], [-1, 0, -1, -1, -1]]
    assert ts.generated_positions(left, [2, 2]).tolist() == [[-1, 0, 1, 2, -1], [-1, -1, -1, 0, -1]]


def test_token_shift_table_and_summary_by_hand():
    tokens = ["To", "x", "y"]
    p_ref = torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64)
    p_oth = torch.tensor([[[0.6, 0.35, 0.05], [0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64)
    gen = torch.tensor([[0, 1, -1]])
    df = ts.token_shift(p_ref.log(), p_oth.log(), gen, tokens, track={"To": 0}, sample_ids=["s0"])
    assert len(df) == 2 and df["group"].tolist() == ["first", "other"]
    assert df["boosted"].tolist() == ["To", "x"] and df["suppressed"].tolist() == ["y", "y"]
    assert df["boosted_dp"].tolist() == pytest.approx([0.4, 0.1])
    assert df["dp[To]"].tolist() == pytest.approx([0.4, 0.0], abs=tolerance(torch.float64, 1.0, 2))
    assert df["ref_top"].tolist() == ["x", "y"] and df["other_top"].tolist() == ["To", "y"]
    assert df["reinforces_top"].tolist() == [False, False]
    kl0 = sum(a * math.log(a / b) for a, b in zip([0.2, 0.5, 0.3], [0.6, 0.35, 0.05]))
    assert df["kl"][0] == pytest.approx(kl0)
    same = ts.token_shift(p_ref.log(), p_ref.log(), gen, tokens)
    assert same["kl"].abs().max() == 0.0  # p (log p - log p): exactly 0
    summ = ts.summarize(df, min_count=1)
    assert summ["by_group"].set_index("group").loc["first", "kl"] == pytest.approx(kl0)
    assert summ["by_token"]["token"].tolist() == ["To", "x"]
    assert ts.top_samples(df, n=1) == ["s0"]
    # prompt "p q" (2 tokens), generated "To x": the first row (pos 0) is drawn on "To", the second on "x"
    hs = ts.html_samples(df, {"s0": ["p", "q", "To", "x"]}, {"s0": 2})
    assert hs[0].values[:2] == [None, None] and hs[0].values[2:] == pytest.approx(df["kl"].tolist())


def test_render_tokens_is_self_contained_and_diverging():
    from mechsteer.sequences.html import TokenRow, render_tokens

    html = render_tokens(
        [("h<1>", [TokenRow("s<0>", ["<b>", "x", "y"], [1.0, -0.5, 0.0])])], title="t", value_name="dp"
    )
    assert "&lt;b&gt;" in html and "<b>" not in html and "s&lt;0&gt;" in html and "h&lt;1&gt;" in html
    assert "rgb(230,120,20)" in html  # +max: full orange
    assert "rgb(148,178,238)" in html  # -half: half-way to blue (40,100,220)
    assert "rgb(255,255,255)" in html  # 0: white
    assert "<script" not in html and "http" not in html
    # one scale per section: 1.0 is full orange in a section whose largest |value| is 1, half in one of 2
    two = render_tokens(
        [("a", [TokenRow("r", ["x"], [1.0])]), ("b", [TokenRow("r", ["x", "y"], [1.0, 2.0])])], title="t"
    )
    assert two.count("rgb(230,120,20)") == 2 and "rgb(242,188,138)" in two


# ------------------------------------------------------------------------------------------- scripts


def test_script_classifier_on_a_fixed_token_list():
    want = {
        "hello": "Latin",
        " Привет": "Cyrillic",
        "中文": "Han",
        "مرحبا": "Arabic",
        "123": "common",
        " ,.!": "common",
        "": "common",
        "café": "Latin",
        "e\u0301": "Latin",
        "\ufffd": "byte",
        "こんにちは": "Hiragana",
        "カタ": "Katakana",
        "한국": "Hangul",
        "Ａ": "Latin",
        "αβγ": "Greek",
        "שלום": "Hebrew",
        "नमस्ते": "Devanagari",
        "ไทย": "Thai",
        "Zа": "Cyrillic",
    }  # one Latin and one Cyrillic letter: the tie goes to the first name (Cyrillic < Latin)
    got = {t: ne.token_script(t) for t in want}
    assert got == want
    assert not ne.is_non_latin("Latin") and not ne.is_non_latin("common") and ne.is_non_latin("Han")


def test_script_table_top_vs_bottom():
    tokens = ["the", "and", "Привет", "中", "12", "к"]
    scores = torch.tensor([[5.0, 4.0, -3.0, -4.0, 0.0, -2.0], [-1.0, -2.0, 3.0, 2.0, 0.0, 1.0]])
    df = ne.script_table(scores, tokens, ks=[2, 3], labels=["L0", "L1"]).set_index(["layer", "k", "end"])
    assert df.loc[("L0", 2, "top"), "frac_non_latin"] == 0.0
    assert df.loc[("L0", 2, "bottom"), "frac_non_latin"] == 1.0
    assert df.loc[("L0", 3, "top"), "frac_non_latin"] == 0.0  # the, and, 12 (common)
    assert df.loc[("L0", 3, "top"), "frac_non_latin_lettered"] == 0.0
    assert df.loc[("L1", 3, "top"), "n[Cyrillic]"] == 2 and df.loc[("L1", 3, "top"), "n[Han]"] == 1
    assert df.loc[("L1", 2, "bottom"), "n[Latin]"] == 2
    base = ne.vocab_baseline(tokens).iloc[0]
    assert base["n_non_latin"] == 3 and base["frac_non_latin"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- tokenwise


def test_pearson_against_numpy_and_scipy():
    g = np.random.default_rng(0)
    x = g.normal(size=50)
    y = 0.3 * x + g.normal(size=50)
    f64 = tolerance(torch.float64, 1.0, 3 * 50)  # |r| <= 1 from three sums of 50 products
    assert tw.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=f64)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert tw.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0], abs=f64)
    assert math.isnan(tw.pearson([1, 1, 1], [1, 2, 3]))


def test_segment_borders_on_a_chatml_prompt():
    from tiny_tokenizer import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    toks = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    # <|im_start|> system\n(7) Be brief.(9) <|im_end|> \n | <|im_start|> user\n(5) | 2+2?(4) | <|im_end|> \n
    # <|im_start|> assistant\n(10) | generation
    borders = tw.segment_borders(toks + ["4", "<|im_end|>"])
    assert borders == {"system_end": 19, "header_end": 25, "problem_end": 29, "prompt_end": 42}
    assert len(toks) == 42
    labels = tw.segment_labels(44, borders)
    assert labels[0] == "system" and labels[19] == "user_header" and labels[25] == "problem"
    assert labels[29] == "assistant_header" and labels[42] == "generation"
    bpe = ["<|im_start|>", "user", "Ċ", "What", "?", "<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ", "To"]
    assert tw.segment_borders(bpe) == {"system_end": 0, "header_end": 3, "problem_end": 5, "prompt_end": 10}
    llama = [
        "<|begin_of_text|>",
        "<|start_header_id|>",
        "user",
        "<|end_header_id|>",
        "ĊĊ",
        "Hi",
        "<|eot_id|>",
        "<|start_header_id|>",
        "assistant",
        "<|end_header_id|>",
        "ĊĊ",
    ]
    got = tw.segment_borders(llama, start="<|start_header_id|>", end="<|eot_id|>", header_end="<|end_header_id|>")
    assert got == {"system_end": 0, "header_end": 4, "problem_end": 6, "prompt_end": 10}
    # the readout picks the markers from the prompt itself (the Llama profiles' segments were ChatML's: none found)
    assert tw.segment_borders(llama, **tw.chat_markers(llama)) == got and tw.chat_markers(bpe) == {}
    gemma = ["<bos>", "<start_of_turn>", "user", "Ċ", "Hi", "<end_of_turn>", "Ċ", "<start_of_turn>", "model", "Ċ"]
    assert tw.segment_borders(gemma, **tw.chat_markers(gemma)) == {
        "system_end": 0,
        "header_end": 4,
        "problem_end": 5,
        "prompt_end": 10,
    }
    with pytest.raises(ValueError, match="no user turn"):
        tw.segment_borders(["a", "b"])


def test_tokenwise_rows_and_summaries_by_hand():
    alpha = torch.tensor([[0.0, -2.0, -4.0], [-6.0, 0.0, 0.0]])
    norm = torch.tensor([[1.0, 2.0, 3.0], [2.0, 9.0, 9.0]])
    cos = torch.tensor([[0.1, 0.2, 0.4], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rows = tw.tokenwise_rows(
        7, alpha, norm, cos, mask, sample_ids=["a", "b"], segments=[["problem", "problem", "generation"], ["problem"]]
    )
    assert rows["pos"].tolist() == [0, 1, 2, 0] and rows["alpha"].tolist() == [0, -2, -4, -6]
    summ = tw.layer_summary(rows).iloc[0]
    assert summ["sign"] == -1.0 and summ["mean_mlp_norm"] == pytest.approx(2.0)
    assert summ["mean_alpha_norm"] == pytest.approx(3.0 / 2.0)  # mean(0, 2, 4, 6) / 2
    assert summ["median_alpha_norm"] == pytest.approx(3.0 / 2.0)
    assert summ["pearson_r_alpha_cos"] == pytest.approx(np.corrcoef([0, -2, -4, -6], [0.1, 0.2, 0.4, 0.5])[0, 1])
    seg = tw.segment_summary(rows).set_index("segment")
    assert seg.loc["generation", "mean_alpha_norm"] == pytest.approx(2.0)
    assert seg.loc["problem", "n"] == 3 and seg.index.tolist() == ["problem", "generation"]
    m = tw.alpha_matrix(rows, "a")
    assert m.loc[7].tolist() == pytest.approx([0.0, 1.0, 2.0])


# ------------------------------------------------------------------------------------------- plots


def test_plots_write_png_atomically(tmp_path):
    import pandas as pd

    mat = pd.DataFrame([[0.5, -1.0], [float("nan"), 0.2]], index=[0, 1], columns=[0, 1])
    p = plots.heatmap(mat, tmp_path / "h.png", title="dv", markers=[(0, 1)], vlines=[1])
    df = pd.DataFrame({"layer": [0, 1, 2, 0, 1, 2], "acc": [0.1, 0.3, 0.2, 0.2, 0.2, 0.4], "seed": [0, 0, 0, 1, 1, 1]})
    q = plots.line_plot(
        df, tmp_path / "l.png", x="layer", y="acc", hue="seed", bands={"base": (0.1, 0.15), "random": 0.25}
    )
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["h.png", "l.png"]
