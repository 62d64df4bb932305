"""prefix_token with SmolLM2's real tokenizer and chat template (a tiny Llama with its vocabulary): the forced
opening equals appending the token to the prompt by hand, through the same rendering, tokenizing and
generation path the readouts use; a multi-token opening is refused unless allowed.

The embedded model is converted once per machine (~15 s) by the session fixture, so these tests run on a
fresh checkout instead of skipping."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from tolerance import logits_tolerance

from mechsteer.errors import CompileError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.spec.kinds.prompting import PrefixTokenSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from mechsteer.models.embedded import embedded_dir

    return AutoTokenizer.from_pretrained(str(embedded_dir()))  # converts the embedded model on first use


def _lm(model, tokenizer):
    from mechsteer.models.loading import LoadedModel
    from mechsteer.spec.models import ModelSpec

    tokenizer.padding_side = "left"
    adapter = adapter_for(model)
    return LoadedModel(
        "tiny",
        ModelSpec(id="tiny", dtype="float32", device="cpu"),
        model,
        tokenizer,
        adapter,
        adapter.shape(model),
        torch.device("cpu"),
        torch.float32,
        "local",
        None,
    )


def test_prefix_equals_appending_the_token_by_hand(tokenizer):
    from mechsteer.generation import model_sampling, render_prompts, sample_texts, tokenize

    model = make_tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=256)
    lm = _lm(model, tokenizer)
    question = "What is 2+3?"
    plain = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    with steering(model, adapter_for(model), [PrefixTokenSpec(token="To")], {}, tokenizer=tokenizer) as ctx:
        assert ctx.scope.n_hooks == 0  # only the prompt changes
        tok_id = ctx.extras["prefix_token.id"]
        prompts = render_prompts(lm, [question], "raw", ctx.prompt_suffix)
        ids = tokenize(lm, prompts)["input_ids"][0].tolist()
        steered = sample_texts(lm, ctx, prompts, model_sampling(lm, max_new_tokens=5))[0]
    assert tokenizer.convert_ids_to_tokens(tok_id) == "To"
    by_hand = tokenizer(plain, add_special_tokens=False)["input_ids"] + [tok_id]
    assert ids == by_hand  # the readouts' rendering + tokenizing gives the prompt plus exactly that token

    with torch.no_grad():
        unforced = model(input_ids=torch.tensor([by_hand[:-1]])).logits[0, -1]
        forced = model(input_ids=torch.tensor([by_hand])).logits[0, -1]
        x = torch.tensor([by_hand])  # explicit mask: SmolLM2's pad token also occurs inside the prompt
        ref = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(by_hand) :]
    changed = (forced - unforced).abs().max()
    assert changed > 10 * logits_tolerance(model, forced, unforced)  # the opening changes what comes next
    # the condition's generation is plain greedy generation from the by-hand ids (stop tokens cut, if any)
    assert list(steered.generated_ids) == ref[: steered.n_generated].tolist()
    assert steered.text(tokenizer) == tokenizer.decode(steered.completion_ids, skip_special_tokens=True)
    assert steered.first_token(tokenizer) == tokenizer.decode(ref[:1].tolist())


def test_single_token_check(tokenizer):
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    with pytest.raises(CompileError, match=r"'To solve' is 2 tokens"):
        with steering(model, adapter_for(model), [PrefixTokenSpec(token="To solve")], {}, tokenizer=tokenizer):
            pass
    with steering(
        model, adapter_for(model), [PrefixTokenSpec(token="To solve", single_token=False)], {}, tokenizer=tokenizer
    ) as ctx:
        assert ctx.prompt_suffix == "To solve"
