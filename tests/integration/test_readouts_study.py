"""Every mechanistic readout kind in one study on a tiny Llama, each table checked against a computation done
here with plain torch (own hooks, full forwards, no replay, no mechsteer readout functions), not only that its
files appear: logit-lens top tokens, u_l, persistence DV/DD/LM/self, token-shift KL (and 0 against itself),
vector statistics, non-Latin counts of the top-k, lora1's alpha_t; and the report links each section."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import make_tiny_model
from safetensors.torch import save_file
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import forward_ops, logits_tolerance, tolerance

from mechsteer.api import load_study

N, D, D_FF = 4, 32, 64
PROMPTS = ["add 2 and 3", "what is 7?", "hello there"]


def _cells(results, kind):
    out = {}
    for c in results.recorded():
        if c["kind"] == kind:
            out.setdefault(c["condition"], results.store.dir(c["hash"]) / kind)
    return out


def _sequences(out: Path, match) -> list[dict]:
    """The cached teacher-forced sequences whose key's interventions satisfy `match`."""
    found = [json.loads(f.read_text()) for f in (out / "work" / "sequences").glob("*.json")]
    hits = [f for f in found if match(f["key"]["interventions"])]
    assert len(hits) == 1, [f["key"]["interventions"] for f in found]
    # each cached sequence is the sampled ids; a readout's sample id is its index in the list
    return [
        {**d, "ids": d["prompt_ids"] + d["generated_ids"], "prompt_length": len(d["prompt_ids"]), "sample": i}
        for i, d in enumerate(hits[0]["sequences"])
    ]


def _pad(seqs):
    T = max(len(s["ids"]) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s["ids"])] = torch.tensor(s["ids"])
        mask[r, : len(s["ids"])] = 1
    return ids, mask


@torch.no_grad()
def _resid(model, ids, mask, add: dict[int, torch.Tensor], where=None) -> list[torch.Tensor]:
    """resid_post of every block with `add[l]` added to block l's output (at positions `where` [b, T] only,
    when given), by own forward hooks."""
    outs, handles = [], []
    for i, layer in enumerate(model.model.layers):

        def hook(m, a, o, i=i):
            h = o[0] if isinstance(o, tuple) else o
            if i in add:
                h = h + (add[i] if where is None else where.unsqueeze(-1).to(h.dtype) * add[i])
            outs.append(h.detach().clone())
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handles.append(layer.register_forward_hook(hook))
    try:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return outs, logits


def _counted(mask):
    m = mask.bool()
    return m & ((m.long().cumsum(1) - 1) < m.sum(1, keepdim=True) - 1)


def _cos(x, y):
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readouts")
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    model.save_pretrained(tmp / "model")
    make_tiny_tokenizer().save_pretrained(tmp / "model")
    g = torch.Generator().manual_seed(3)
    lora = {
        "A": torch.randn(N, D_FF, generator=g),
        "B": torch.randn(N, D, generator=g) * 2,
        "layers": torch.tensor([1, 2]),
    }
    save_file(lora, str(tmp / "lora.safetensors"))
    sampled = {"prompts": PROMPTS, "template": "qwen_math", "max_new_tokens": 6, "temperature": 1.0, "batch_size": 2}
    doc = {
        "name": "tiny_readouts",
        "seeds": [0],
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {
            "v": {"kind": "random", "seed": 0, "norm": 4.0},
            "w": {"kind": "random", "seed": 1, "norm": 2.0},
            "u": {"kind": "random", "seed": 2, "norm": 3.0, "layers": [2]},
        },
        "conditions": {
            "base": [],
            "steer": [{"kind": "add", "vector": "v"}],
            "steer_w": [{"kind": "add", "vector": "w"}],
            "one": [{"kind": "add", "vector": "u"}],
            "gen_steer": [{"kind": "add", "vector": "v", "positions": "generated"}],
            "lora": [{"kind": "lora1", "path": "lora.safetensors"}],
        },
        "readouts": {
            "lens": {"kind": "logit_lens", "conditions": ["steer", "one"], "k": 5, "unembedding_bias": True, **sampled},
            "stats": {"kind": "vector_stats", "conditions": ["steer*", "one"]},
            "scripts": {"kind": "non_english", "conditions": ["steer"], "ks": [5, 40]},
            "persist": {"kind": "persistence", "conditions": ["steer"], **sampled},
            "shift": {"kind": "token_shift", "conditions": ["steer", "gen_steer"], "track": ["a", "T"], **sampled},
            "self": {"kind": "token_shift", "conditions": ["steer"], "reference": "steer", "track": [], **sampled},
            "alpha": {"kind": "tokenwise", "conditions": ["lora"], **sampled},
        },
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    import mechsteer.readouts.token_shift_kind as ts

    old, ts.SLICE = ts.SLICE, 16  # several position slices per chunk, so the slicing itself is checked
    try:
        results = load_study(tmp / "s.yaml").run(output_dir=tmp / "out")
    finally:
        ts.SLICE = old
    return {"results": results, "model": model, "out": Path(results.output_dir), "lora": lora, "tmp": tmp}


def _vec(run, name):
    from mechsteer.engine.vectors import BuildContext
    from mechsteer.spec.kinds.vectors import RandomVectors

    specs = {
        "v": RandomVectors(seed=0, norm=4.0),
        "w": RandomVectors(seed=1, norm=2.0),
        "u": RandomVectors(seed=2, norm=3.0, layers=[2]),
    }
    return BuildContext(n_layers=N, d_model=D, specs=specs, model_id="tiny").get(name).vectors.double()


def test_vector_readouts_match_direct_computation(run):
    model, results = run["model"], run["results"]
    v = _vec(run, "v")
    cell = _cells(results, "logit_lens")["steer"]
    lens = pd.read_csv(cell / "tokens.csv", keep_default_na=False)
    w_u = model.lm_head.weight.detach().double()
    nw, eps = model.model.norm.weight.detach().double(), model.config.rms_norm_eps
    for src in range(N):
        dot = w_u @ v[src]
        normed = w_u @ (v[src] * torch.rsqrt(v[src].pow(2).mean() + eps) * nw)
        # float64 products; the normed direction comes from the model's own RMSNorm, which works in float32
        for is_normed, ref, dtype in ((False, dot, torch.float64), (True, normed, torch.float32)):
            sel = lens[(lens.layer == src) & (lens.normed == is_normed) & (lens.metric == "dot")]
            top, bottom = sel[sel.end == "top"], sel[sel.end == "bottom"]
            assert top.token_id.tolist() == ref.topk(5).indices.tolist()
            assert bottom.token_id.iloc[0] == int(ref.argmin())
            x = v[src] * torch.rsqrt(v[src].pow(2).mean() + eps) * nw if is_normed else v[src]
            terms = w_u.abs() @ x.abs()  # the products before cancellation
            assert top.value.iloc[0] == pytest.approx(float(ref.max()), abs=tolerance(dtype, terms.max(), 2 * D))
    # a set with one row (a single-layer vector) is read at its layer, not at its position in the list
    one = pd.read_csv(_cells(results, "logit_lens")["one"] / "tokens.csv", keep_default_na=False)
    u = _vec(run, "u")[2]
    assert u.norm() > 1
    sel = one[(one.metric == "dot") & (~one.normed) & (one.end == "top")]
    assert sel.layer.unique().tolist() == [2] and sel.token_id.tolist() == (w_u @ u).topk(5).indices.tolist()

    stats = _cells(results, "vector_stats")
    assert set(stats) == {"steer", "steer_w", "one"}
    one_norms = pd.read_csv(stats["one"] / "norms.csv")
    # random vectors are rescaled to their norm in float32; statistics are float64 of the same float32 rows
    assert one_norms.layer.tolist() == [2]
    assert one_norms.norm.tolist() == pytest.approx([3.0], abs=tolerance(torch.float32, 3.0, D))
    summ = pd.read_csv(stats["steer"] / "summary.csv")
    s = torch.linalg.svdvals(v)
    rank = float((s**2).sum() / s[0] ** 2)
    assert summ.stable_rank.iloc[0] == pytest.approx(rank, abs=tolerance(torch.float64, rank, N * D))
    norms = pd.read_csv(stats["steer"] / "norms.csv")
    assert norms.norm.tolist() == pytest.approx([4.0] * N, abs=tolerance(torch.float32, 4.0, D))
    al = pd.read_csv(run["out"] / "report" / "vector_stats_alignment.csv")
    w = _vec(run, "w")
    assert al.cos.tolist() == pytest.approx(_cos(v, w).tolist(), abs=tolerance(torch.float64, 1.0, 3 * D))

    scripts = pd.read_csv(_cells(results, "non_english")["steer"] / "scripts.csv")
    from tiny_tokenizer import CHARS, SPECIALS

    texts = SPECIALS + CHARS
    wn = w_u / w_u.norm(dim=1, keepdim=True)
    for src in range(N):
        cos = wn @ (v[src] / v[src].norm())
        for k in (5, 40):
            for end, largest in (("top", True), ("bottom", False)):
                idx = cos.topk(k, largest=largest).indices.tolist()
                letters = sum(texts[i].isalpha() for i in idx)  # special tokens (<pad>, ...) count as no script
                row = scripts[(scripts.layer == src) & (scripts.k == k) & (scripts.end == end)].iloc[0]
                assert row.n_lettered == letters
                assert row.frac_non_latin == 0.0  # an ASCII vocabulary has no other script


def test_persistence_and_unembedding_bias_match_own_forward(run):
    model, results, out = run["model"], run["results"], run["out"]
    v = _vec(run, "v").float()
    table = pd.read_csv(_cells(results, "persistence")["steer"] / "table.csv")
    bias = pd.read_csv(_cells(results, "logit_lens")["steer"] / "bias_vectors.csv", index_col=0)
    for src in range(N):
        seqs = _sequences(
            out,
            lambda ivs, src=src: (
                len(ivs) == 1 and ivs[0]["kind"] == "add" and ivs[0]["vector"] == "v" and ivs[0]["layer"] == src
            ),
        )
        ids, mask = _pad(seqs)
        base, _ = _resid(model, ids, mask, {})
        steered, _ = _resid(model, ids, mask, {src: v[src]})
        m = _counted(mask)
        assert (steered[N - 1] - base[N - 1]).abs().max() > 1e-3  # the vector changes the last block
        # the readout's dF and this one are float32 differences of hidden states from two computations each
        # (replay vs full forward): per element at most 2 x the hidden states' rounding; a cosine with a
        # vector x moves by at most |error| / |x|
        size = max(float(h.abs().max()) for h in base + steered)
        err = 2 * tolerance(torch.float32, size, forward_ops(model))
        vec_err = err * D**0.5  # the error of a whole [D] row
        for j in range(N):
            row = table[(table.source == src) & (table.target == j)]
            if j < src:
                assert row.empty
                continue
            dF = (steered[j] - base[j]).double()
            dv = [float(_cos(dF[r][m[r]], v[j].double()).mean()) for r in range(len(seqs))]
            dd = [float(_cos(dF[r][m[r]], dF[r][m[r]].mean(0)).mean()) for r in range(len(seqs))]
            mean = dF[m].mean(0)
            rel = [vec_err / dF[r][m[r]].norm(dim=-1) for r in range(len(seqs))]  # per token |error| / |dF|
            dv_tol = sum(float(e.mean()) for e in rel) / len(seqs)
            dd_tol = sum(float(e.mean()) + vec_err / float(dF[r][m[r]].mean(0).norm()) for r, e in enumerate(rel))
            assert row.dv.iloc[0] == pytest.approx(sum(dv) / len(dv), abs=dv_tol)
            assert row.dd.iloc[0] == pytest.approx(sum(dd) / len(dd), abs=dd_tol / len(seqs))
            assert row.lm.iloc[0] == pytest.approx(float(_cos(mean, v[j].double())), abs=vec_err / float(mean.norm()))
            if j == src:  # dF = fl(h + v) - h = v + e: cos 1 - (|e| / |v|)^2 / 2 or closer
                e = tolerance(torch.float32, size, D) / float(v[j].norm())
                assert row.dv.iloc[0] == pytest.approx(1.0, abs=e**2 / 2 + tolerance(torch.float64, 1.0, D))
            if j == N - 1:
                assert bias.loc[src].to_numpy() == pytest.approx(mean.numpy(), abs=err)


def test_token_shift_matches_own_forward_and_is_zero_against_itself(run):
    results = run["results"]
    cells = {}
    for c in results.recorded():
        if c["kind"] == "token_shift":
            cells[c["measurement"]] = results.store.dir(c["hash"]) / "token_shift"
    for cond, positions in (("steer", "all"), ("gen_steer", "generated")):
        cell = next(
            results.store.dir(c["hash"]) / "token_shift"
            for c in results.recorded()
            if c["measurement"] == "readout:shift" and c["condition"] == cond
        )
        _check_shift(run, pd.read_csv(cell / "positions.csv", keep_default_na=False), positions)
    same = pd.read_csv(cells["readout:self"] / "positions.csv", keep_default_na=False)
    assert len(same) > 0 and same.kl.abs().max() == 0.0
    assert "<span" in (cells["readout:shift"] / "samples.html").read_text()


def _check_shift(run, pos, positions):
    """token_shift's rows against full forwards with own hooks (`generated`: v added at generated tokens only,
    the path that replay cannot take)."""
    model, out = run["model"], run["out"]
    v = _vec(run, "v").float()
    seqs = _sequences(
        out,
        lambda ivs: (
            len(ivs) == 1 and ivs[0]["kind"] == "add" and ivs[0]["layer"] == "all" and ivs[0]["positions"] == positions
        ),
    )
    ids, mask = _pad(seqs)
    where = None
    if positions == "generated":
        where = torch.zeros_like(mask, dtype=torch.bool)
        for r, s in enumerate(seqs):
            where[r, s["prompt_length"] : len(s["ids"])] = True
    _, base = _resid(model, ids, mask, {})
    _, steered = _resid(model, ids, mask, {src: v[src] for src in range(N)}, where)
    lp, lq = torch.log_softmax(base.double(), -1), torch.log_softmax(steered.double(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    # the readout's float32 logits (replay from a captured state, or its own forward) and these are rounding
    # apart by at most d; log-probs then by 2d, so KL = sum p (lp - lq) by at most 2d (sum p |lp - lq| + 2)
    # and a probability difference q_a - p_a by at most 2d (p_a + q_a)
    d = logits_tolerance(model, base, steered)
    kl_tol = 2 * d * ((lp.exp() * (lp - lq).abs()).sum(-1) + 2)
    a_id = 3 + sorted(set(__import__("tiny_tokenizer").CHARS)).index("a")
    assert kl.max() > 1e-3
    n_checked = 0
    for r, s in enumerate(seqs):
        rows = pos[pos["sample"] == s["sample"]].sort_values("pos")
        n_gen = len(s["ids"]) - s["prompt_length"]
        assert rows["pos"].tolist() == list(range(n_gen))
        for _, row in rows.iterrows():
            t = s["prompt_length"] - 1 + int(row["pos"])
            assert row.kl == pytest.approx(float(kl[r, t]), abs=float(kl_tol[r, t]))
            dp = lq[r, t].exp() - lp[r, t].exp()
            assert row.boosted_id == int(dp.argmax()) and row.suppressed_id == int(dp.argmin())
            dp_tol = 2 * d * float(lq[r, t, a_id].exp() + lp[r, t, a_id].exp())
            assert row["dp[a]"] == pytest.approx(float(dp[a_id]), abs=dp_tol)  # float32 replay vs full forward
            assert row.group == ("first" if row["pos"] == 0 else "other")
            n_checked += 1
    assert n_checked > 0
    if positions == "generated":  # the prompt is unsteered, so the first generated token's distribution is too
        assert pos[pos.group == "first"].kl.abs().max() < 1e-12 and pos[pos.group == "other"].kl.max() > 1e-3


def test_tokenwise_alpha_matches_hand_lora(run):
    model, results, out, lora = run["model"], run["results"], run["out"], run["lora"]
    rows = pd.read_csv(_cells(results, "tokenwise")["lora"] / "rows.csv", keep_default_na=False)
    seqs = _sequences(out, lambda ivs: len(ivs) == 1 and ivs[0]["kind"] == "lora1")
    ids, mask = _pad(seqs)
    seen, terms, handles = {}, {}, []
    for i in (1, 2):
        a, b = lora["A"][i], lora["B"][i]

        def hook(m, args, o, i=i, a=a, b=b):
            z = args[0]
            seen[i] = (z @ a) * b.norm()
            terms[i] = (z.abs() @ a.abs()) * b.norm()  # alpha before cancellation
            return o + (z @ a).unsqueeze(-1) * b

        handles.append(model.model.layers[i].mlp.down_proj.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for r, s in enumerate(seqs):
        for i in (1, 2):
            got = rows[(rows["sample"] == s["sample"]) & (rows.layer == i)].sort_values("pos")
            # z comes from a float32 forward (the readout's and this one): rounding at the size of alpha's terms
            tol = tolerance(torch.float32, terms[i][r, : len(s["ids"])].max(), forward_ops(model))
            assert got.alpha.to_numpy() == pytest.approx(seen[i][r, : len(s["ids"])].numpy(), abs=tol)
            assert set(got.segment) >= {"system", "problem", "generation"}


def test_report_has_every_section_with_plots(run):
    rep = run["out"] / "report"
    text = (rep / "report.md").read_text()
    for title in (
        "## Logit lens of the vectors",
        "### Effective unembedding bias",
        "## Vector statistics",
        "## Non-Latin scripts",
        "## Persistence of single-layer vectors",
        "## Token shift",
        "## Token-wise magnitude of lora1",
    ):
        assert title in text
    pngs = [line.split("(")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(pngs) >= 7 and all((rep / p).is_file() for p in pngs)
    for f in (
        "logit_lens.csv",
        "persistence.csv",
        "token_shift_groups.csv",
        "non_english.csv",
        "vector_stats.csv",
        "tokenwise_layers.csv",
    ):
        assert len(pd.read_csv(rep / f)) > 0
