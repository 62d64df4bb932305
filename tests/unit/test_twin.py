"""Random-weight twins (mechsteer.models.twin): the model's class, depth and head layout with shrunk widths, the
stand-in tokenizer with the family's chat template and stop tokens, samples that end, and a folder the planner
refuses outside a rehearsal."""

from __future__ import annotations

import json

import pytest
import torch

from mechsteer.models.twin import MARKER, STOP_PROBABILITY, calibration_prompts, stop_ids, twin_dir
from mechsteer.spec.model_configs import model_config

CASES = {
    "Qwen/Qwen2.5-Math-7B": ("Qwen2ForCausalLM", 28, 28, 4, "chatml", False),
    "meta-llama/Llama-3.1-8B-Instruct": ("LlamaForCausalLM", 32, 32, 8, "llama3", False),
    "gemma3-270m": ("Gemma3ForCausalLM", 18, 4, 1, "none", True),
    "Qwen/Qwen2.5-1.5B": ("Qwen2ForCausalLM", 28, 12, 2, "chatml", True),
}


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    return {mid: twin_dir(model_config(mid), root) for mid in CASES}


def _load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("model_id", sorted(CASES))
def test_a_twin_keeps_the_class_depth_and_heads(twins, model_id):
    arch, layers, heads, kv, chat, tied = CASES[model_id]
    model, tok = _load(twins[model_id])
    cfg, real = model.config, model_config(model_id)
    assert type(model).__name__ == arch
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (layers, heads, kv)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features == heads * cfg.head_dim and attn.k_proj.out_features == kv * cfg.head_dim
    # hidden = heads x head_dim exactly where the model has it (Qwen, Llama), not where it does not (Gemma 3)
    assert (cfg.hidden_size == heads * cfg.head_dim) == (real.d_model == real.n_heads * real.head_dim)
    assert cfg.hidden_size < real.d_model / 10 and len(tok) < 2000
    assert (model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()) == tied
    assert bool(getattr(attn.q_proj, "bias", None) is not None) == (arch == "Qwen2ForCausalLM")
    marker = json.loads((twins[model_id] / MARKER).read_text())
    assert marker["rehearsal_twin_of"] == model_id and "NOT the model's weights" in marker["weights"]
    assert (tok.chat_template is not None) == (chat != "none")


def test_the_llama_twin_has_llama_rope_and_template(twins):
    model, tok = _load(twins["meta-llama/Llama-3.1-8B-Instruct"])
    assert model.config.rope_parameters["rope_type"] == "llama3"
    text = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    eos = model.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids("<|eot_id|>") in eos and tok.convert_tokens_to_ids("<|end_of_text|>") in eos


def test_tracked_words_and_stop_tokens_are_single_tokens(twins):
    """The words the bundled studies track (`To`, `Step`) and every family's stop tokens are one token each."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(twins["Qwen/Qwen2.5-Math-7B"])
    for word in ["To", "Step", " To", " Step", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"]:
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tok("To Stepping", add_special_tokens=False)["input_ids"]) > 2  # not everything is one token


@pytest.mark.parametrize("model_id", sorted(CASES))
def test_a_twin_stops_at_the_calibrated_rate(twins, model_id):
    """The stop tokens' mean probability after the calibration prompts is STOP_PROBABILITY (bisection to
    float32 logits), and sampled completions end: most within 16 tokens."""
    model, tok = _load(twins[model_id])
    stops = stop_ids(model_config(model_id), tok)
    probs = []
    with torch.no_grad():
        for text in calibration_prompts(tok):
            ids = tok(text, return_tensors="pt", add_special_tokens=not tok.chat_template)["input_ids"]
            probs.append(float(torch.softmax(model(ids).logits[0, -1].float(), -1)[stops].sum()))
    assert sum(probs) / len(probs) == pytest.approx(STOP_PROBABILITY, abs=1e-3)
    ids = tok(calibration_prompts(tok)[0], return_tensors="pt", add_special_tokens=not tok.chat_template)
    torch.manual_seed(0)
    out = model.generate(**ids, do_sample=True, max_new_tokens=16, num_return_sequences=12, pad_token_id=stops[0])
    ended = sum(any(int(t) in stops for t in row[ids["input_ids"].shape[1] :]) for row in out)
    assert ended >= 6


def test_a_twin_is_built_once(twins, tmp_path):
    mc = model_config("Qwen/Qwen2.5-Math-7B")
    again = twin_dir(mc, twins[mc.model_id].parent)
    assert again == twins[mc.model_id]
    assert len([p for p in again.parent.iterdir() if p.name.startswith("Qwen-Qwen2.5-Math-7B")]) == 1


def test_the_planner_refuses_a_twin_outside_a_rehearsal(twins):
    from mechsteer.engine.plan import compile_study
    from mechsteer.errors import CompileError
    from mechsteer.spec.loader import load_study_dict

    doc = {
        "name": "t",
        "models": {"m": {"id": str(twins["gemma3-270m"])}},
        "conditions": {"base": []},
        "readouts": {"f": {"kind": "first_token", "prompts": ["hi"]}},
    }
    with pytest.raises(CompileError, match="rehearsal's random-weight twin") as e:
        compile_study(load_study_dict(doc))
    assert "--rehearse" in e.value.problems[0].hint
