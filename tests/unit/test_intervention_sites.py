"""Where each intervention kind acts, per block layout, and the report's "Models and intervention sites" section
that lists it per model. The sentences come from the kinds (`InterventionBase.site`) and the layout facts
(`mechsteer.spec.layouts`): a Gemma3 run's report says its `add` sits after post_feedforward_layernorm's
residual add and is not a down_proj bias; a Llama run's says it is one."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter
from recorded_runs import eval_cell, write_run
from test_kinds import INTERVENTIONS

from mechsteer.models.adapters import ADAPTERS
from mechsteer.report import write_report
from mechsteer.report.models import intervention_sites
from mechsteer.results import Results
from mechsteer.spec.kinds import INTERVENTION_KINDS
from mechsteer.spec.kinds.interventions import AddSpec
from mechsteer.spec.layouts import ARCHITECTURE_LAYOUTS, LAYOUTS, layout_of
from mechsteer.spec.study import InterventionSpec


def test_the_layout_table_agrees_with_the_adapters():
    for arch in ADAPTERS.names():
        assert ARCHITECTURE_LAYOUTS[arch] == ADAPTERS.get(arch).layout, arch
        assert ADAPTERS.get(arch).supports_surgery, arch
        # surgery normalises the attention output exactly where the block does (sandwich blocks only)
        assert ("attn_out_norm" in ADAPTERS.get(arch).paths) == (ADAPTERS.get(arch).layout == "sandwich"), arch
    assert set(ARCHITECTURE_LAYOUTS) == set(ADAPTERS.names())
    assert set(LAYOUTS) == {a.layout for a in (ADAPTERS.get(n) for n in ADAPTERS.names())}


@pytest.mark.parametrize("kind", INTERVENTION_KINDS.names())
def test_every_kind_describes_its_site_on_every_layout(kind, tmp_path):
    spec = TypeAdapter(InterventionSpec).validate_python({"kind": kind, **INTERVENTIONS[kind](tmp_path / "a")})
    texts = {name: spec.site(layout) for name, layout in (*LAYOUTS.items(), ("unknown", None))}
    assert all(isinstance(t, str) and len(t) > 20 for t in texts.values()), texts
    if kind in ("add", "compose", "transfer"):  # on the residual stream after the block
        assert "identical to a bias on block l's mlp.down_proj" in texts["pre_norm"]
        assert "NOT a bias on block l's mlp.down_proj" in texts["sandwich"]
        assert "post_feedforward_layernorm" in texts["sandwich"] and "down_proj" not in texts["unknown"]
    if kind == "lora1":
        assert "post_feedforward_layernorm" in texts["sandwich"] and "as it is" in texts["pre_norm"]


def test_layout_of_an_unknown_architecture_is_none():
    assert layout_of("GPT2LMHeadModel") is None and layout_of(None) is None
    assert layout_of("Gemma3ForCausalLM").name == "sandwich"


ADD = {"kind": "add", "vector": "v"}
SKIP = {"kind": "skip_layer", "vector": "v", "layer": 3}


def _run(tmp_path):
    cells = []
    for model in ("smol", "gemma"):
        cells += [
            eval_cell(model, "base", [1, 0, 1, 0]),
            {**eval_cell(model, "steered", [1, 1, 1, 0]), "interventions": [ADD]},
            {**eval_cell(model, "steered_gen", [1, 1, 0, 0]), "interventions": [{**ADD, "positions": "generated"}]},
            {**eval_cell(model, "skip", [0, 1, 1, 0]), "interventions": [SKIP]},
        ]
    return write_run(
        tmp_path / "run",
        study="fam",
        cells=cells,
        n_layers={"smol": 30, "gemma": 18},
        architectures={"smol": "LlamaForCausalLM", "gemma": "Gemma3ForCausalLM"},
    )


def test_sites_per_model_come_from_the_kinds(tmp_path):
    r = Results.load(_run(tmp_path))
    sites = intervention_sites(r)
    add = sites[(sites.kind == "add") & ~sites.site.str.contains("generated")].set_index("model")
    assert add.loc["gemma", "conditions"] == ["steered"]
    assert add.loc["gemma", "site"] == AddSpec(vector="v").site(LAYOUTS["sandwich"])
    assert add.loc["smol", "site"] == AddSpec(vector="v").site(LAYOUTS["pre_norm"])
    gen = sites[sites.site.str.contains("generated")]
    assert set(gen.model) == {"smol", "gemma"} and all(c == ["steered_gen"] for c in gen.conditions)
    assert set(sites[sites.kind == "skip_layer"].model) == {"smol", "gemma"}


def test_the_report_of_a_gemma_run_names_its_sites(tmp_path, monkeypatch):
    md = write_report(Results.load(_run(tmp_path))).read_text()
    section = md[md.index("## Models and intervention sites") :]
    section = section[: section.index("\n## ", 5)]
    gemma = [line for line in section.splitlines() if line.startswith("- `gemma`, `add` (`steered`)")]
    assert len(gemma) == 1 and "after post_feedforward_layernorm's residual add" in gemma[0]
    assert "NOT a bias on block l's mlp.down_proj" in gemma[0]
    smol = [line for line in section.splitlines() if line.startswith("- `smol`, `add` (`steered`)")]
    assert len(smol) == 1 and "identical to a bias on block l's mlp.down_proj" in smol[0]
    assert "| gemma   |" in section and "Gemma3ForCausalLM" in section and "sandwich" in section
    assert "Block layout `sandwich`: `r = h + post_attention_layernorm(" in section
    # the sentence is the kind's own: change it and the report follows
    monkeypatch.setattr(AddSpec, "site", lambda self, layout: f"somewhere on {getattr(layout, 'name', None)}")
    md = write_report(Results.load(tmp_path / "run")).read_text()
    assert "- `gemma`, `add` (`steered`, `steered_gen`): somewhere on sandwich" in md
    # several models: the headline side by side, with the command for their paired differences
    assert "### The models side by side (acc_lenient, %)" in md and "--models smol gemma" in md
