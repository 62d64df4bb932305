"""Helpers for the training tests: a tiny character-level tokenizer and a LoadedModel around a tiny model."""

from __future__ import annotations

from mechsteer.models.adapters import adapter_for
from mechsteer.models.loading import LoadedModel
from mechsteer.spec.models import ModelSpec

SPECIALS = ["<pad>", "<s>", "</s>"]
CHARS = list("0123456789+-*=?. abcdefghijklmnopqrstuvwxyz")
VOCAB = len(SPECIALS) + len(CHARS)  # 47 <= the tiny models' vocab of 97


def char_tokenizer():
    """A fast tokenizer mapping each character to one id (pad 0, bos 1, eos 2), no chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="?"
    )
    tok.padding_side = "left"
    return tok


def tiny_lm(model, dtype: str = "float32") -> LoadedModel:
    """Wrap a tiny model (from conftest.make_tiny_model) and the char tokenizer as a LoadedModel."""
    import torch

    adapter = adapter_for(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return LoadedModel(
        "tiny",
        ModelSpec(id="tiny", dtype=dtype, device="cpu"),
        model,
        char_tokenizer(),
        adapter,
        adapter.shape(model),
        torch.device("cpu"),
        next(model.parameters()).dtype,
        "local",
        "tiny-rev",
    )


def train_spec(**over):
    """A TrainSpec for tiny-model runs (raw prompts, short generations); override any field."""
    from mechsteer.spec.training import TrainSpec

    base = {
        "name": "tiny",
        "model": {"id": "tiny", "dtype": "float32", "device": "cpu"},
        "setup": "all_layers",
        "rloo": {
            "group_size": 4,
            "prompts_per_step": 3,
            "steps": 4,
            "lr": 0.05,
            "max_new_tokens": 6,
            "warmup_ratio": 0.0,
        },
        "reward": "last_number",
        "data": {"kind": "jsonl", "path": "unused.jsonl", "template": "raw"},
        "checkpoint_every": 2,
        "seed": 0,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return TrainSpec.model_validate(base)


def rows(n: int = 6) -> list[dict]:
    return [{"id": str(i), "problem": f"what is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)]
