"""`non_english`: do the vectors suppress tokens of non-Latin scripts (paper section 4.8, Figures 15-17)?

Offline and deterministic: each token's text is classified by Unicode script from `unicodedata` character
names (LATIN..., CYRILLIC..., CJK UNIFIED IDEOGRAPH..., ARABIC..., HANGUL..., ...). A token's script is the
most frequent script among its letters; a token with no letters (digits, punctuation, spaces, symbols) is
"common"; a token containing U+FFFD (an incomplete UTF-8 byte sequence, common in byte-level BPE vocabularies)
and no letters is "byte". Then, per layer, among the top-k and the bottom-k tokens of a logit-lens score, the
fraction of tokens in non-Latin scripts (of all k, and of the k's lettered tokens), and counts per script.
Pure: scores and token strings in, DataFrames out.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import pandas as pd
import torch

COMMON, BYTE, LATIN = "common", "byte", "Latin"

# Name keywords -> script, checked in order (first match wins), for letters and combining marks.
_KEYWORDS = (
    ("LATIN", LATIN),
    ("CYRILLIC", "Cyrillic"),
    ("GREEK", "Greek"),
    ("ARMENIAN", "Armenian"),
    ("GEORGIAN", "Georgian"),
    ("HEBREW", "Hebrew"),
    ("ARABIC", "Arabic"),
    ("SYRIAC", "Syriac"),
    ("CJK", "Han"),
    ("IDEOGRAPHIC", "Han"),
    ("HIRAGANA", "Hiragana"),
    ("KATAKANA", "Katakana"),
    ("HANGUL", "Hangul"),
    ("BOPOMOFO", "Bopomofo"),
    ("DEVANAGARI", "Devanagari"),
    ("BENGALI", "Bengali"),
    ("GURMUKHI", "Gurmukhi"),
    ("GUJARATI", "Gujarati"),
    ("ORIYA", "Oriya"),
    ("TAMIL", "Tamil"),
    ("TELUGU", "Telugu"),
    ("KANNADA", "Kannada"),
    ("MALAYALAM", "Malayalam"),
    ("SINHALA", "Sinhala"),
    ("THAI", "Thai"),
    ("LAO", "Lao"),
    ("TIBETAN", "Tibetan"),
    ("MYANMAR", "Myanmar"),
    ("KHMER", "Khmer"),
    ("ETHIOPIC", "Ethiopic"),
    ("MONGOLIAN", "Mongolian"),
    ("THAANA", "Thaana"),
)


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str:
    """Script of one character: a script name for letters/marks, "common" otherwise."""
    if ch == "\ufffd":
        return BYTE
    cat = unicodedata.category(ch)
    if cat[0] not in "LM":
        return COMMON
    name = unicodedata.name(ch, "")
    words = name.replace("-", " ").split()
    for key, script in _KEYWORDS:
        if key in words:
            return script
    if cat[0] == "M":  # a combining mark without a script of its own (accents) takes its letters' script
        return COMMON
    return words[0].title() if words else "other"


def token_script(token: str) -> str:
    """Script of a token's text (see module docstring). Marks (accents) follow their letters' script."""
    counts = Counter(s for s in map(char_script, token) if s not in (COMMON, BYTE))
    if counts:
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return BYTE if "\ufffd" in token else COMMON


def is_non_latin(script: str) -> bool:
    return script not in (LATIN, COMMON, BYTE)


def script_table(
    scores: torch.Tensor, tokens: Sequence[str], *, ks: Sequence[int] = (50, 1000), labels: Sequence | None = None
) -> pd.DataFrame:
    """Per layer (row of `scores`, [n, vocab], e.g. logit-lens cosines), per k in `ks` and end (top/bottom):
    k, n_lettered, n_non_latin, frac_non_latin (of k), frac_non_latin_lettered (of lettered tokens), and one
    `n[<script>]` column per script met (0 where absent). `vocab_baseline` gives the same numbers for the
    whole vocabulary, to compare against."""
    n = scores.shape[0]
    labels = list(range(n)) if labels is None else list(labels)
    scripts = [token_script(t) for t in tokens[: scores.shape[1]]]
    rows = []
    for r in range(n):
        for k in ks:
            kk = min(int(k), scores.shape[1])
            for end, largest in (("top", True), ("bottom", False)):
                idx = scores[r].topk(kk, largest=largest).indices.tolist()
                rows.append({"layer": labels[r], "k": kk, "end": end, **_counts([scripts[i] for i in idx])})
    return _frame(rows)


def vocab_baseline(tokens: Sequence[str]) -> pd.DataFrame:
    """The same fractions over the whole vocabulary (what a random k would give)."""
    return _frame([{"layer": "vocab", "k": len(tokens), "end": "all", **_counts([token_script(t) for t in tokens])}])


def _counts(scripts: list[str]) -> dict:
    c = Counter(scripts)
    lettered = sum(v for s, v in c.items() if s not in (COMMON, BYTE))
    nl = sum(v for s, v in c.items() if is_non_latin(s))
    out = {
        "n_lettered": lettered,
        "n_non_latin": nl,
        "frac_non_latin": nl / len(scripts) if scripts else float("nan"),
        "frac_non_latin_lettered": nl / lettered if lettered else float("nan"),
    }
    out.update({f"n[{s}]": v for s, v in c.items()})
    return out


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    script_cols = sorted(c for c in df.columns if c.startswith("n["))
    df[script_cols] = df[script_cols].fillna(0).astype(int)
    return df[[c for c in df.columns if not c.startswith("n[")] + script_cols]
