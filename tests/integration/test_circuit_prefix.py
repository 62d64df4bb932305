"""prefix_token: the forced opening equals appending the token to the prompt by hand (SmolLM2's tokenizer and
chat template, a tiny Llama with its vocabulary), is checked to be one token, and needs no hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model

from mechsteer.errors import CompileError, ModelLoadError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.models import ModelSpec
from mechsteer.spec.kinds.prompting import PrefixTokenSpec


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from mechsteer.models.embedded import cache_root, embedded_dir

    if not (cache_root() / "embedded").is_dir():
        pytest.skip("the embedded SmolLM2 tokenizer is not converted yet (takes ~15 s once)")
    try:
        return AutoTokenizer.from_pretrained(str(embedded_dir()))
    except ModelLoadError as e:
        pytest.skip(str(e))


def _prompt(tok):
    return tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                   add_generation_prompt=True)


def test_prefix_equals_appending_the_token_by_hand(tokenizer):
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    with steering(model, adapter_for(model), [PrefixTokenSpec(token="To")], {}, tokenizer=tokenizer) as ctx:
        assert ctx.scope.n_hooks == 0  # only the prompt changes
        text = _prompt(tokenizer) + ctx.prompt_suffix
        tok_id = ctx.extras["prefix_token.id"]
    assert tokenizer.convert_ids_to_tokens(tok_id) == "To"
    by_hand = tokenizer(_prompt(tokenizer), add_special_tokens=False)["input_ids"] + [tok_id]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == by_hand

    ids_t, plain = torch.tensor([ids]), torch.tensor([by_hand[:-1]])
    with torch.no_grad():
        unforced = model(input_ids=plain).logits[0, -1]
        forced = model(input_ids=ids_t).logits[0, -1]
        assert not torch.allclose(forced, unforced, atol=1e-4)  # the opening changes what comes next
        torch.testing.assert_close(forced, model(input_ids=torch.tensor([by_hand])).logits[0, -1])
    # No hooks (asserted above): cached and uncached generation are the unsteered model's on these ids.


def test_single_token_check(tokenizer):
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    with pytest.raises(CompileError, match=r"'To solve' is 2 tokens"):
        with steering(model, adapter_for(model), [PrefixTokenSpec(token="To solve")], {}, tokenizer=tokenizer):
            pass
    with steering(model, adapter_for(model), [PrefixTokenSpec(token="To solve", single_token=False)], {},
                  tokenizer=tokenizer) as ctx:
        assert ctx.prompt_suffix == "To solve"


def test_token_defaults_and_misuse():
    model = make_tiny_model("llama")
    spec = PrefixTokenSpec()
    assert spec.bind(ModelSpec(id="x", prefix_token="Step"), None, Path).token == "Step"
    assert PrefixTokenSpec(token="To").bind(ModelSpec(id="x", prefix_token="Step"), None, Path).token == "To"
    with pytest.raises(CompileError, match="names no token"):
        with steering(model, adapter_for(model), [spec], {}):
            pass
    with pytest.raises(CompileError, match="one prefix_token per condition"):
        with steering(model, adapter_for(model), [PrefixTokenSpec(token="To"), PrefixTokenSpec(token="Step")], {}):
            pass
