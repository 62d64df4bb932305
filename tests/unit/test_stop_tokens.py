"""Stop tokens: the chat template's end-of-turn token stops generation even when the generation config's eos
is another token (Qwen2.5-Math-7B: eos `<|endoftext|>`, turns closed by `<|im_end|>`; Llama-3.1-Instruct:
turns closed by `<|eot_id|>`), `stop:` strings are validated, and the stop tokens are recorded.

The tokenizers are tiny character-level vocabularies plus the special tokens and the turn-closing layout of
the two families' chat templates (ChatML for Qwen2.5, header/eot for Llama-3.1)."""

from __future__ import annotations

import string

import pytest
import torch
from conftest import make_tiny_model

from mechsteer.errors import ModelLoadError
from mechsteer.generation import model_sampling, sample_texts, stop_info, stop_token_ids
from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.models.stops import end_of_turn_id, stop_string_ids
from mechsteer.spec.models import ModelSpec

CHARS = sorted(set(string.printable) - set("\x0b\x0c\r\t"))

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_TEMPLATE = (  # Qwen2.5-Math layout: default system prompt, ChatML turns closed by <|im_end|>
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nPlease reason step by step, and put your "
    "final answer within \\\\boxed{}.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
    "'\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA_SPECIALS = [
    "<|end_of_text|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
]
LLAMA_TEMPLATE = (  # Llama-3.1-Instruct layout: header ids, message content trimmed, turns closed by <|eot_id|>
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _tokenizer(specials, template, eos, bos=None):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>"] + specials + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token=eos, bos_token=bos, unk_token="?")
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    tok.padding_side = "left"
    return tok


def qwen_math_tokenizer():
    return _tokenizer(QWEN_SPECIALS, QWEN_TEMPLATE, eos="<|endoftext|>")


def llama31_tokenizer():
    return _tokenizer(LLAMA_SPECIALS, LLAMA_TEMPLATE, eos="<|eot_id|>", bos="<|begin_of_text|>")


def test_end_of_turn_is_read_from_the_template():
    qwen = qwen_math_tokenizer()
    assert qwen.eos_token == "<|endoftext|>"
    assert end_of_turn_id(qwen) == qwen.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(qwen) != qwen.eos_token_id
    llama = llama31_tokenizer()
    assert end_of_turn_id(llama) == llama.convert_tokens_to_ids("<|eot_id|>")


def test_no_template_no_end_of_turn():
    tok = qwen_math_tokenizer()
    tok.chat_template = None
    assert end_of_turn_id(tok) is None


def test_text_after_the_turn_that_is_not_special_gives_nothing():
    tok = _tokenizer(QWEN_SPECIALS, "{% for m in messages %}{{ m.content }}END{% endfor %}", eos="<|endoftext|>")
    assert end_of_turn_id(tok) is None


def _model_for(tok, gen_eos):
    model = make_tiny_model("qwen2", vocab_size=len(tok), max_position_embeddings=512)
    model.generation_config.eos_token_id = gen_eos
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def test_stop_ids_order_and_union():
    tok = qwen_math_tokenizer()
    eot, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    model = _model_for(tok, gen_eos=eos)
    assert stop_token_ids(model, tok) == [eos, eot]
    bang = tok.convert_tokens_to_ids("!")
    assert stop_token_ids(model, tok, ["!"]) == [eos, eot, bang]
    info = stop_info(tok, stop_token_ids(model, tok))
    assert info == {"stop_token_ids": [eos, eot], "stop_tokens": ["<|endoftext|>", "<|im_end|>"]}


def test_llama_generation_config_three_eos_plus_template():
    tok = llama31_tokenizer()
    ids = [tok.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    model = _model_for(tok, gen_eos=ids)
    assert stop_token_ids(model, tok) == ids  # eot already listed once: no duplicate


def test_stop_strings_must_be_single_tokens():
    tok = qwen_math_tokenizer()
    assert stop_string_ids(tok, ["<|im_end|>"]) == [tok.convert_tokens_to_ids("<|im_end|>")]
    with pytest.raises(ModelLoadError, match=r"models\['qm'\].stop: 'END' is 3 tokens"):
        stop_string_ids(tok, ["END"], "qm")


def test_model_spec_accepts_stop():
    assert ModelSpec(id="x", stop=["<|im_end|>"]).stop == ["<|im_end|>"]
    assert ModelSpec(id="x").stop == []


def _lm(tok, model, stop=()):
    adapter = adapter_for(model)
    return LoadedModel(
        "tiny",
        ModelSpec(id="tiny", dtype="float32", device="cpu", stop=list(stop)),
        model,
        tok,
        adapter,
        adapter.shape(model),
        torch.device("cpu"),
        torch.float32,
        "local",
        None,
    )


def test_generation_stops_at_end_of_turn_when_eos_differs():
    tok = qwen_math_tokenizer()
    eos, eot = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    model = _model_for(tok, gen_eos=eos)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False)
    ]
    # The unsteered tiny model first writes some text; then <|im_end|> is made the argmax after 3 new tokens.
    lm = _lm(tok, model)
    free = sample_texts(lm, None, prompts, model_sampling(lm, max_new_tokens=8))[0]
    assert not free.finished and free.n_generated == 8
    width = len(tok(prompts[0], add_special_tokens=False)["input_ids"])

    orig_forward = model.forward

    def forward(*args, **kwargs):
        out = orig_forward(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        total = kwargs["attention_mask"].shape[1] if kwargs.get("attention_mask") is not None else ids.shape[1]
        if total - width >= 3:
            out.logits[:, -1, eot] = 1e4
        return out

    model.forward = forward
    try:
        comp = sample_texts(lm, None, prompts, model_sampling(lm, max_new_tokens=8))[0]
    finally:
        del model.forward
    assert comp.finished, "generation ran past the chat template's end-of-turn token"
    text = comp.text(tok)
    assert comp.n_generated == 4 and text == free.text(tok)[: len(text)] and len(text) == 3
    assert comp.generated_ids[-1] == eot and eot not in tok(text, add_special_tokens=False)["input_ids"]
