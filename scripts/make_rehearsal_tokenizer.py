"""Write the rehearsal's stand-in tokenizer, `mechsteer/data/rehearsal/tokenizer.json` (committed; run again
only to change it): a byte-level BPE of VOCAB tokens trained with the `tokenizers` library on a small corpus made
here (the bundled `mini` task's problems, the paper's prompt texts, the words the bundled studies track or
categorise), with the special tokens of the three chat-template families the twins use (ChatML, Llama 3, Gemma)
in one vocabulary.

Why not a real model's tokenizer: the twins (`mechsteer.models.twin`) must build offline, on any machine, fast,
and with a vocabulary small enough that the twin's embedding and unembedding stay tiny; a byte-level BPE encodes
every text (no unknown token, exact round trip) like the paper models' tokenizers, and one vocabulary holding
every family's special tokens lets each twin get its family's chat template and stop tokens. The embedded
SmolLM2's tokenizer would tie the rehearsal to the embedded model's conversion and has 49,152 tokens.

    python scripts/make_rehearsal_tokenizer.py            # writes the file and checks it
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VOCAB = 1536
"""Tokens in all (special tokens, the 256 byte tokens and the merges; at most this many if the corpus runs out)."""

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
]
"""ChatML (Qwen, SmolLM2), Llama 3 and Gemma special tokens, ids 0.. in this order."""

WORDS = (
    "To Step First Firstly Next Then Now So Thus Therefore Hence Let We Since Given Finally Consider Recall Note "
    "Notice Check Calculate Compute Find Determine Solve Simplify Substitute Using Apply Start Begin The answer is "
    "the a of and to in is that for with as by on are this be at from or an which it we can have not"
)
"""Words the bundled studies track (`To`, `Step`) or categorise (Figure 6's process words), and common ones."""


def corpus() -> list[str]:
    """The training texts (deterministic)."""
    from mechsteer.eval.mini_task import MINI_VARIANTS, generate_mini, mini_pool
    from mechsteer.eval.templates import QA_FEWSHOT_PLAIN, QWEN_MATH_PLAIN, QWEN_MATH_SYSTEM, R1_PLAIN

    texts = [QWEN_MATH_SYSTEM, QWEN_MATH_PLAIN, R1_PLAIN, QA_FEWSHOT_PLAIN]
    for variant in MINI_VARIANTS:
        for split in ("train", "test"):
            for row in generate_mini(split, len(mini_pool(split, variant)), variant=variant):
                texts.append(f"{row['problem']}\nTo solve this, Step 1: {row['answer']}. \\boxed{{{row['answer']}}}")
    words = WORDS.split()
    for _ in range(40):  # enough repetitions that every listed word becomes one token, with and without a space
        texts += [" " + " ".join(words), "\n".join(words)]
    texts += [" ".join(str(n) for n in range(k, k + 100)) for k in range(0, 1000, 100)]
    texts += ["\\frac{1}{2} \\sqrt{3} $x^2$ \\cdot \\times \\le \\ge \\pi ( ) [ ] { } = + - * / , . : ;"] * 20
    return texts


def build():
    """Train the tokenizer (a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def check(tok) -> None:
    """Every tracked word is one token, alone and after a space; text round-trips."""
    for word in ("To", "Step", " To", " Step", "\n"):
        ids = tok.encode(word).ids
        assert len(ids) == 1, f"{word!r} is {len(ids)} tokens"
    text = "What is 7 * 9? To solve: \\boxed{63} é ü 中文"
    assert tok.decode(tok.encode(text).ids) == text
    assert 512 < tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i


def main() -> None:
    tok = build()
    check(tok)
    out = ROOT / "mechsteer" / "data" / "rehearsal" / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    print(f"wrote {out} ({tok.get_vocab_size()} tokens, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
