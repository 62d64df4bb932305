"""The `paper*` profiles compute the paper's objects, for both models (issue 23, findings 1-8): each check
reads the shipped study and training files, so a profile that drifts back to a different object fails here.
Also: every profile compiles, names its hub models and benchmarks, lists its deviations, and docs/paper.md and
docs/paper_numbers.yaml refer only to what exists."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml
from bundled_studies import bundled_plan, bundled_study
from conftest import REPO

from mechsteer.engine.plan import compile_study
from mechsteer.errors import SpecError
from mechsteer.spec.loader import load_study
from mechsteer.spec.sweeps import SweepSpec
from mechsteer.spec.training import Lora1Setup, is_training_file, load_train_spec
from mechsteer.spec.vector_origin import vector_origin

STUDIES = sorted(p for p in (REPO / "studies").glob("*.yaml") if not is_training_file(p))
QWEN, LLAMA = "Qwen/Qwen2.5-Math-7B", "meta-llama/Llama-3.1-8B-Instruct"
SIX = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench"]
LLAMA_RESULTS = [
    "accuracy",
    "add_place",
    "checkpoints",
    "composition",
    "last_layer",
    "logit_lens",
    "penultimate",
    "persistence",
    "prefix_token",
    "single_layer",
    "tokenwise",
    "transfer",
]
"""Studies of a figure or table where the paper (or its code) has a Llama-3.1-8B-Instruct result."""
DEFAULT_PART_ELSEWHERE = {"penultimate"}
"""Studies whose default (embedded-model) part is being rewritten on another branch; its deviations come with it."""


def _study(name, profile=None):
    return bundled_study(name, profile)


def _profiles(name):
    return [p for p in _study(name).spec.profiles if p.startswith("paper")]


def _readout_conditions(ls, readout):
    r = ls.spec.readouts[readout]
    from fnmatch import fnmatchcase

    return {
        n: c
        for n, c in ls.spec.conditions.items()
        if r.conditions is None or any(fnmatchcase(n, w) for w in r.conditions)
    }


def _added(cond):
    if isinstance(cond, SweepSpec):
        return [iv["vector"] for iv in cond.interventions if iv.get("kind") == "add"]
    return [iv.vector for iv in cond if iv.kind == "add"]


# ------------------------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("profile", [None, "paper", "paper_llama"])
def test_fig4_and_figs15_17_read_independently_trained_single_layer_vectors(profile):
    ls = _study("logit_lens", profile)
    bias = [n for n, r in ls.spec.readouts.items() if r.kind == "logit_lens" and r.unembedding_bias]
    scripts = [n for n, r in ls.spec.readouts.items() if r.kind == "non_english"]
    assert bias and scripts
    for readout in bias + scripts:
        origins = {vector_origin(ls, v) for c in _readout_conditions(ls, readout).values() for v in _added(c)}
        assert "per_block" in origins and origins <= {"per_block", "control"}, (readout, origins)
    if profile is not None:
        singles = ls.spec.vectors["singles"]
        assert singles.kind == "trained" and singles.per_block == "all" and singles.profile == "single_layer"


TRAIN = """
name: tr
model: {id: smollm2-135m}
setup: all_layers
rloo: {steps: 2, max_new_tokens: 8}
data: {kind: mini}
profiles:
  one: {setup: {single_layer: 5}}
"""


@pytest.mark.parametrize(
    "vector, refused",
    [
        ("{kind: bundled, name: smollm2-135m/all_layers}", True),
        ("{kind: trained, train: train.yaml}", True),
        ("{kind: scaled, of: joint, factor: 2.0}", True),
        ("{kind: bundled, name: smollm2-135m/single_layers}", False),
        ("{kind: trained, train: train.yaml, profile: one, per_block: all}", False),
        ("{kind: trained, train: train.yaml, profile: one}", False),
        ("{kind: random, norm: 1.0}", False),
    ],
)
def test_u_l_and_persistence_refuse_rows_of_a_jointly_trained_set(tmp_path, vector, refused):
    (tmp_path / "train.yaml").write_text(textwrap.dedent(TRAIN))
    doc = textwrap.dedent(
        f"""
        name: s
        models: {{m: {{id: smollm2-135m}}}}
        vectors:
          joint: {{kind: bundled, name: smollm2-135m/all_layers}}
          v: {vector}
        conditions: {{base: [], steer: [{{kind: add, vector: v}}]}}
        readouts:
          bias: {{kind: logit_lens, conditions: [steer], unembedding_bias: true, prompts: [hi]}}
          persist: {{kind: persistence, conditions: [steer], prompts: [hi]}}
        """
    )
    (tmp_path / "s.yaml").write_text(doc)
    if not refused:
        load_study(tmp_path / "s.yaml")
        return
    with pytest.raises(SpecError) as e:
        load_study(tmp_path / "s.yaml")
    text = "\n".join(p.format() for p in e.value.problems)
    assert re.search(r"s.yaml:\d+:\d+: readouts.bias: the effective unembedding bias u_l .*'steer'.*jointly", text)
    assert re.search(r"readouts.persist: persistence runs under condition 'steer'.*per_block: all", text)
    (tmp_path / "s.yaml").write_text(doc.replace("prompts: [hi]}", "prompts: [hi], joint_rows: true}"))
    load_study(tmp_path / "s.yaml")  # analysing joint rows on purpose is allowed


# ------------------------------------------------------------------------------------------- finding 2


def test_paper_profiles_read_selected_checkpoints_and_the_selection_study_covers_those_runs():
    for model, train in ((None, "train_paper.yaml"), ("_llama", "train_paper_llama.yaml")):
        ls = _study("checkpoints", "paper" + (model or ""))
        plan = bundled_plan("checkpoints", "paper" + (model or ""))
        names = {c.condition for c in plan.cells}
        n_layers = 28 if model is None else 32
        for step in (106, 159, 212, 265, 314):
            assert f"ckpt_{step}" in names and f"block{n_layers - 1}_ckpt_{step}" in names
            assert f"block0_ckpt_{step}" in names
        assert not any("ckpt_53" in n for n in names)  # the paper's candidates start at 106
        assert ls.spec.vectors["s106"].train == train and ls.spec.evaluation.tasks == SIX
    for name in ("single_layer", "persistence", "logit_lens", "composition", "penultimate", "last_layer"):
        for profile in _profiles(name):
            per_block = [v for v in _study(name, profile).spec.vectors.values() if getattr(v, "per_block", None)]
            assert per_block and all(v.checkpoint == "best" for v in per_block), (name, profile)


# ------------------------------------------------------------------------------------------- finding 3


@pytest.mark.parametrize(
    "profile, train, n", [("paper", "train_paper.yaml", 28), ("paper_llama", "train_paper_llama.yaml", 32)]
)
def test_appendix_s_uses_one_single_block_adapter_per_block(profile, train, n):
    plan = bundled_plan("tokenwise", profile)
    alpha = {c.condition for c in plan.cells if c.measurement.id == "readout:alpha"}
    assert alpha == {f"lora1_block_{k}" for k in range(n)}
    for k in (0, n - 1):
        (iv,) = next(c for c in plan.cells if c.condition == f"lora1_block_{k}").interventions
        assert iv.per_block and iv.layer == k and iv.profile == "lora1_single"
        assert iv.path.endswith(f"layer-{k:02d}/lora1.safetensors")
    single = load_train_spec(REPO / "studies" / train, "lora1_single").spec
    assert isinstance(single.setup, Lora1Setup) and single.per_block.lr_rule == "file"
    if train == "train_paper.yaml":  # the paper's lora-1-layer-k table
        assert single.rloo.lr_per_layer[2] == 3e-3 and single.rloo.lr_per_layer[3] == 1e-3
        assert single.rloo.lr == 1e-3 and 27 not in single.rloo.lr_per_layer
    else:
        assert single.rloo.lr == 5e-4 and not single.rloo.lr_per_layer


# ------------------------------------------------------------------------------------------- finding 4


@pytest.mark.parametrize("profile, heads, kv, pen", [("paper", 28, 4, 26), ("paper_llama", 32, 8, 30)])
def test_penultimate_profile_has_every_panel_of_figure_5_and_figure_6(profile, heads, kv, pen):
    ls = _study("penultimate", profile)
    plan = bundled_plan("penultimate", profile)
    conds: dict = {}
    for c in plan.cells:
        conds.setdefault(c.condition, c.interventions)

    def panel(kind, **want):
        return sorted(
            n
            for n, ivs in conds.items()
            if len(ivs) == 1 and ivs[0].kind == kind and all(getattr(ivs[0], f) == v for f, v in want.items())
        )

    assert len(panel("qkv", proj=["q"], mode="steer_only")) == heads  # Q per query head
    assert len(panel("qkv", proj=["k"], mode="steer_only")) == kv  # K per KV head
    assert len(panel("qkv", proj=["v"], mode="steer_only")) == kv + 1  # V per KV head, and all heads
    assert len(panel("head", mode="remove_from")) == heads  # Skip-Head
    assert len(panel("head", mode="steer_only")) == heads  # Steer-Head
    assert panel("skip_attn") and panel("skip_layer")
    (band,) = conds["s_last"]
    assert band.kind == "add" and band.layer == pen + 1
    assert ls.spec.vectors["s_last"].per_block == [pen + 1] and ls.spec.vectors["pen"].per_block == [pen]
    assert "allpen" not in ls.spec.vectors  # no second name for the same set
    fig6 = ls.spec.readouts["fig6"]
    assert fig6.kind == "token_shift" and fig6.reference == "skip_attn" and fig6.conditions == ["s_pen"]
    assert set(fig6.categories) == {"process_words", "structure_symbols"}
    assert (fig6.task, fig6.split, fig6.shuffle, fig6.limit, fig6.only_finished) == (
        "deepscaler",
        "train",
        1,
        256,
        True,
    )


# ------------------------------------------------------------------------------------------- findings 5, 6


@pytest.mark.parametrize("profile", ["paper", "paper_llama"])
def test_readout_prompts_and_diff_diff_follow_the_paper(profile):
    persist = _study("persistence", profile).spec.readouts["persist"]
    assert persist.diff_diff_mean == "dataset"  # the Figure 2 caption's E_x[dF]
    assert (persist.task, persist.split, persist.shuffle, persist.limit) == ("deepscaler", "train", 0, 100)
    shift = _study("last_layer", profile).spec.readouts["shift"]
    assert (shift.task, shift.split, shift.shuffle, shift.limit, shift.only_finished) == (
        "deepscaler",
        "train",
        0,
        256,
        True,
    )
    bias = _study("logit_lens", profile).spec.readouts["bias"]
    assert (bias.task, bias.split, bias.shuffle, bias.limit) == ("deepscaler", "train", 0, 100)
    alpha = _study("tokenwise", profile).spec.readouts["alpha"]
    assert (alpha.task, alpha.split, alpha.shuffle, alpha.limit) == ("deepscaler", "train", 0, 100)


# ------------------------------------------------------------------------------------------- finding 7


@pytest.mark.parametrize("name", LLAMA_RESULTS)
def test_llama_has_a_profile_wherever_the_paper_has_a_llama_result(name):
    ls = _study(name, "paper_llama")
    ids = {m.id for m in ls.spec.models.values()}
    assert LLAMA in ids and not any(i.startswith("Qwen/") for i in ids)
    plan = bundled_plan(name, "paper_llama")
    used = {n for c in plan.cells for iv in c.interventions for n in iv.vector_refs()}
    trained = [ls.spec.vectors[n] for n in used if ls.spec.vectors[n].kind == "trained"]
    assert trained and all(v.train == "train_paper_llama.yaml" for v in trained), name
    lora = [iv for c in plan.cells for iv in c.interventions if iv.kind == "lora1" and iv.train]
    assert all(iv.train.endswith("train_paper_llama.yaml") for iv in lora)


def test_llama_and_family_training_recipes():
    llama = load_train_spec(REPO / "studies/train_paper_llama.yaml").spec
    assert (llama.model.id, llama.rloo.lr, llama.model.max_length) == (LLAMA, 8e-5, 8192)
    assert (llama.rloo.group_size, llama.rloo.prompts_per_step, llama.rloo.steps) == (16, 128, 314)
    single = load_train_spec(REPO / "studies/train_paper_llama.yaml", "single_layer").spec
    assert single.rloo.lr_per_layer[30] == 7e-3 and single.rloo.lr_per_layer[31] == 5e-3
    base = load_train_spec(REPO / "studies/train_paper_llama.yaml", "llama31_8b_base").spec
    assert (base.model.id, base.rloo.lr, base.rloo.group_size, base.data.template) == (
        "meta-llama/Llama-3.1-8B",
        3e-4,
        64,
        "r1",
    )
    for f in ("train_paper.yaml", "train_paper_llama.yaml"):
        full = load_train_spec(REPO / "studies" / f, "full").spec
        assert full.setup == "full" and full.rloo.lr == 1e-6
        assert load_train_spec(REPO / "studies" / f, "lora1").spec.rloo.lr == 1e-4
    for p in ("qwen25_7b", "qwen25_7b_instruct", "qwen25_15b", "qwen25_15b_instruct"):
        assert load_train_spec(REPO / "studies/train_paper.yaml", p).spec.model.max_length == 8192
    assert load_train_spec(REPO / "studies/train_paper.yaml", "qwen25_15b_instruct").spec.rloo.group_size == 64


def test_table_1_has_every_family_and_appendix_c_every_place():
    families = {
        p: {m.id for m in _study("transfer", p).spec.models.values()} for p in ("paper", "paper_qwen15", "paper_llama")
    }
    assert families["paper"] == {"Qwen/Qwen2.5-7B", QWEN, "Qwen/Qwen2.5-7B-Instruct"}
    assert families["paper_qwen15"] == {"Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-1.5B-Instruct"}
    assert families["paper_llama"] == {LLAMA, "meta-llama/Llama-3.1-8B"}
    places = set()
    for c in bundled_plan("add_place", "paper").cells:
        if c.interventions and not c.condition.startswith("random"):
            (iv,) = c.interventions  # p_<place>, p25_<place>: each trained at its own place
            places.add((iv.layer, iv.place or iv.vector.split("_", 1)[1]))
    for want in [(23, "mlp"), (24, "self_attn"), (25, "input_layernorm"), (25, "mlp"), (27, "self_attn")]:
        assert want in places, want
    assert (27, "post_attention_layernorm") in places
    llama = bundled_plan("add_place", "paper_llama")
    assert {c.interventions[0].layer for c in llama.cells if c.interventions} == {31}
    greedy = _study("prefix_token", "paper_greedy").spec.evaluation
    assert greedy.protocol == "greedy" and greedy.tasks == SIX
    assert _study("prefix_token", "paper_llama_greedy").spec.models["smol"].prefix_token == "Step"


# ------------------------------------------------------------------------------------------- every profile


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_paper_profile_compiles_names_its_hub_models_and_lists_deviations(path):
    ls = bundled_study(path)
    profiles = [p for p in ls.spec.profiles if p.startswith("paper")]
    for profile in profiles:
        merged = bundled_study(path, profile)
        plan = bundled_plan(path, profile)
        assert plan.cells
        for m in merged.spec.models.values():
            assert "/" in m.id, (profile, m.id)  # a hub id a rehearsal can swap for a twin
        ev = merged.spec.evaluation
        assert ev is None or "mini" not in ev.tasks, profile
        assert all(getattr(r, "task", None) != "mini" for r in merged.spec.readouts.values()), profile
        assert merged.spec.deviations, f"{path.stem} -p {profile}: no deviations listed"
        assert plan.summary()["deviations"] == merged.spec.deviations
    if profiles and path.stem not in DEFAULT_PART_ELSEWHERE:
        assert ls.spec.deviations, f"{path.stem}: the default run lists no deviations"


def test_the_report_lists_the_deviations(tmp_path):
    from mechsteer.report.provenance import deviations_section

    class R:
        summary = compile_study(_study("persistence", "paper"), output_root=tmp_path).summary()

    lines = deviations_section(R)
    assert lines[0] == "## Deviations from the paper"
    assert sum(line.startswith("- ") for line in lines) == len(_study("persistence", "paper").spec.deviations)


def test_plan_json_deviations_are_a_typed_field(tmp_path):
    """plan.json's `deviations` is read back as a list of sentences; anything else is refused, located."""
    from mechsteer.errors import MechsteerError
    from mechsteer.results import check_summary

    summary = compile_study(_study("persistence", "paper"), output_root=tmp_path).summary()
    assert check_summary(summary, "plan.json")["deviations"] == _study("persistence", "paper").spec.deviations
    with pytest.raises(MechsteerError, match="deviations"):
        check_summary(summary | {"deviations": "one sentence, not a list"}, "plan.json")


# ------------------------------------------------------------------------------------------- docs


def test_docs_paper_names_existing_studies_profiles_training_runs_and_numbers():
    text = (REPO / "docs" / "paper.md").read_text()
    numbers = yaml.safe_load((REPO / "docs" / "paper_numbers.yaml").read_text())
    for f, profile in re.findall(r"studies/(\w+)\.yaml -p (\w+)", text):
        path = REPO / "studies" / f"{f}.yaml"
        spec = (load_train_spec if is_training_file(path) else bundled_study)(path).spec
        assert profile in spec.profiles, (f, profile)
    known = {
        p
        for t in ("train_paper.yaml", "train_paper_llama.yaml")
        for p in load_train_spec(REPO / "studies" / t).spec.profiles
    }
    known |= {p for path in STUDIES for p in bundled_study(path).spec.profiles}
    for profile in re.findall(r"-p (\w+)(?![\w<])", text):
        assert profile in known, profile
    figures = text.split("## 2.")[1].split("## 3.")[0]
    cited = [
        k for row in figures.splitlines()[4:] if row.startswith("|") for k in re.findall(r"`(\w+)`", row.split("|")[5])
    ]
    assert len(cited) > 10
    for key in cited:
        assert key in numbers["numbers"], key
    for entry in numbers["numbers"].values():
        assert entry["source"] in numbers["sources"]
    # the expected GPU hours: the generated estimate block (benchmarks/paper_estimate.py), no placeholder left
    assert "TBD" not in text and "[Expected GPU hours](#expected-gpu-hours)" in text
    block = text.split("<!-- results:paper_estimate -->")[1].split("<!-- /results:paper_estimate -->")[0]
    assert "| **total** |" in block and "mechsteer plan --estimate --all" in block


def test_paper_numbers_are_never_read_as_results():
    for p in (REPO / "mechsteer").rglob("*.py"):
        assert "paper_numbers" not in p.read_text(), p
