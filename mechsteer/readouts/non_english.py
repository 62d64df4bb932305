"""`non_english`: do the vectors suppress tokens of non-Latin scripts (paper section 4.8, Figures 15-17)?

Offline and deterministic: each letter of a token's text is classified by its Unicode Script property
(UAX #24, read from fontTools' copy of the Unicode Character Database, `fontTools.unicodedata.script`;
Python's `unicodedata` lacks the property). Letters of the Common script (µ MICRO SIGN, 𝐀 MATHEMATICAL BOLD
CAPITAL A, ʼ MODIFIER LETTER APOSTROPHE) are "common"; combining marks of the Inherited script (accents)
take the script of the letter they sit on, as UAX #24 prescribes. A token's script is the most frequent
script among its letters; a token with no letters of a script (digits, punctuation, spaces, symbols) is
"common"; a token containing U+FFFD (an incomplete UTF-8 byte sequence, common in byte-level BPE
vocabularies) and no such letters is "byte". Then, per layer, among the top-k and the bottom-k tokens of a
logit-lens score, the fraction of tokens in non-Latin scripts (of all k, and of the k's lettered tokens),
and counts per script. Pure: scores and token strings in, DataFrames out.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import pandas as pd
import torch
from fontTools import unicodedata as ucd

COMMON, BYTE, LATIN = "common", "byte", "Latin"
INHERITED = "inherited"
"""What `char_script` says of a combining mark of the Inherited script: it takes its base letter's script."""

# ISO 15924 codes of the Script values that name no script of their own.
_COMMON_CODES = frozenset({"Zyyy", "Zzzz"})  # Common, Unknown (unassigned, private use)
_INHERITED_CODE = "Zinh"


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str:
    """Script of one character by its Unicode Script property: a script name ("Latin", "Cyrillic", "Han")
    for letters and marks of a script, `INHERITED` for a combining mark that takes its base's script,
    "common" for everything else (digits, punctuation, symbols, letters of the Common script), and "byte"
    for U+FFFD."""
    if ch == "\ufffd":
        return BYTE
    if unicodedata.category(ch)[0] not in "LM":
        return COMMON
    code = ucd.script(ch)
    if code == _INHERITED_CODE:
        return INHERITED
    if code in _COMMON_CODES:
        return COMMON
    return ucd.script_name(code)


@lru_cache(maxsize=65536)
def _unbased_mark_script(ch: str) -> str:
    """A combining mark with no letter before it in the token (byte-level BPE splits them off): the one
    script its Script_Extensions name, or "common" when they name several."""
    codes = ucd.script_extension(ch) - _COMMON_CODES - {_INHERITED_CODE}
    return ucd.script_name(next(iter(codes))) if len(codes) == 1 else COMMON


def letter_scripts(token: str) -> list[str]:
    """The script of each character of `token`, combining marks resolved to their base letter's script."""
    out: list[str] = []
    base: str | None = None
    for ch in token:
        script = char_script(ch)
        if script == INHERITED:
            script = base if base is not None else _unbased_mark_script(ch)
        elif unicodedata.category(ch)[0] != "M":
            base = script  # marks stack on the last non-mark character, whatever its script
        out.append(script)
    return out


def token_script(token: str) -> str:
    """Script of a token's text (see module docstring). Marks (accents) follow their letters' script."""
    counts = Counter(s for s in letter_scripts(token) if s not in (COMMON, BYTE))
    if counts:
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return BYTE if "\ufffd" in token else COMMON


def is_non_latin(script: str) -> bool:
    """Whether a script counts as non-Latin (not Latin, not shared marks or digits, not a byte fallback)."""
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
