"""Tiny causal LMs whose answers are known without running them, for end-to-end tests of studies of several
models (one folder, `mechsteer diff --models`, benchmarks/families.py).

Every block's o_proj and down_proj are zero (a block adds nothing), every token embeds to e = (1, 0, ..., 0),
the final norm keeps dimension 0 only, and the unembedding has one non-zero entry. So the last hidden state
normalises to about sqrt(d) e_0 and the logits are 0 except for one digit: greedy generation with one new
token answers that digit on every problem, and p(digit) at the end of the prompt is e^l / (e^l + V - 1)
(`p_digit`). A vector whose rows are (-2, 0, ..., 0) turns dimension 0 negative after any one block, so a
steered model answers nothing right.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer
from tolerance import tolerance

from mechsteer.vectors.vector_set import VectorSet, save_vector_set

EPS = 1e-6
"""The tiny models' RMS-norm epsilon (tests/conftest.py)."""


def forced_model(root: Path, name: str, arch: str, n: int, d: int, digit: str, p: float) -> None:
    """Save a forced model `root/name` (a local model folder with its tokenizer) that answers `digit` with
    probability about `p`, and its steering vectors `root/name.safetensors` (rows (-2, 0, ..., 0))."""
    tok = make_tiny_tokenizer()
    m = make_tiny_model(arch, vocab_size=VOCAB_SIZE, num_hidden_layers=n, hidden_size=d)
    logit = math.log(p / (1 - p) * (VOCAB_SIZE - 1))  # e^L / (e^L + V - 1) = p
    with torch.no_grad():
        for block in m.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        m.model.embed_tokens.weight.zero_()
        m.model.embed_tokens.weight[:, 0] = 1.0
        m.model.norm.weight.zero_()
        m.model.norm.weight[0] = 1.0
        m.lm_head.weight.zero_()
        m.lm_head.weight[tok.convert_tokens_to_ids(digit), 0] = logit / math.sqrt(d)
    m.save_pretrained(root / name)
    tok.save_pretrained(root / name)
    rows = torch.zeros(n, d)
    rows[:, 0] = -2.0
    save_vector_set(VectorSet(rows, list(range(n))), root / f"{name}.safetensors")


def p_digit(d: int, p: float) -> tuple[float, float]:
    """(p(digit) at the end of the prompt of a forced model of width `d` built for `p`, computed by hand in
    float64 with the norm's epsilon and the float32 rounding of the stored weight; its float32 tolerance)."""
    weight = float(torch.tensor(math.log(p / (1 - p) * (VOCAB_SIZE - 1)) / math.sqrt(d), dtype=torch.float32))
    logit = weight / math.sqrt(1 / d + EPS)  # the final norm of e = (1, 0, ..., 0), dimension 0 kept
    return math.exp(logit) / (math.exp(logit) + VOCAB_SIZE - 1), tolerance(torch.float32, logit, d)
