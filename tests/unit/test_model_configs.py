"""The package's table of model configs (mechsteer/data/model_configs.yaml): every model the bundled studies and
training files name is in it, its facts give the models' published sizes, validation's shapes come from it, and
a local folder is read from its own config.json."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

from mechsteer.spec.model_configs import chat_family, model_config, table
from mechsteer.spec.models import EMBEDDED_MODELS, KNOWN_SHAPES

PUBLISHED_PARAMS = {
    "Qwen/Qwen2.5-Math-7B": 7.62e9,
    "Qwen/Qwen2.5-1.5B": 1.54e9,
    "Qwen/Qwen2.5-14B": 14.77e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "smollm2-135m": 134.5e6,
    "gemma3-270m": 268e6,
}
"""Parameter counts the model cards state (to three digits)."""


def _named_models() -> set[str]:
    ids = set()
    for f in (REPO / "studies").glob("*.yaml"):
        ids |= set(re.findall(r"\bid: ([A-Za-z0-9][\w.\-/]*)", f.read_text()))
    return {i for i in ids if "/" in i or i in EMBEDDED_MODELS} - {"agentica-org/deep_scale_r-preview-dataset"}


def test_every_model_the_bundled_studies_name_is_in_the_table():
    named = _named_models()
    assert {"Qwen/Qwen2.5-Math-7B", "meta-llama/Llama-3.1-8B", "smollm2-135m"} <= named  # the scan sees them
    assert named - set(table()) == set()


@pytest.mark.parametrize("model_id", sorted(PUBLISHED_PARAMS))
def test_the_facts_give_the_published_size(model_id):
    assert model_config(model_id).n_params() == pytest.approx(PUBLISHED_PARAMS[model_id], rel=0.005)


def test_validation_shapes_come_from_the_table():
    assert set(KNOWN_SHAPES) == set(table())
    qwen, llama = KNOWN_SHAPES["Qwen/Qwen2.5-Math-7B"], KNOWN_SHAPES["meta-llama/Llama-3.1-8B-Instruct"]
    assert (qwen.n_layers, qwen.d_model, qwen.n_heads, qwen.n_kv_heads) == (28, 3584, 28, 4)
    assert (llama.n_layers, llama.d_model, llama.n_heads, llama.n_kv_heads) == (32, 4096, 32, 8)
    assert model_config("gemma3-270m").head_dim == 256 and model_config("Qwen/Qwen2.5-7B").head_dim == 128


def test_a_local_folder_is_read_from_its_config(tmp_path):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 5,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
    }
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "chat_template.jinja").write_text("{{ '<|start_header_id|>' }}")
    mc = model_config("m", tmp_path)
    assert (mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.head_dim, mc.chat_template) == (5, 4, 2, 16, "llama3")
    assert model_config("org/not-a-model", tmp_path) is None


def test_chat_families():
    assert chat_family(None) == "none"
    assert chat_family("{{ '<|im_start|>' + role }}") == "chatml"
    assert chat_family("<start_of_turn>user") == "gemma"
