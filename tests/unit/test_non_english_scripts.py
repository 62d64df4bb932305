"""`non_english` classifies letters by the Unicode Script property: letters whose character name starts with
no script word (FEMININE ORDINAL INDICATOR, MICRO SIGN, MODIFIER LETTER ..., MATHEMATICAL BOLD ...) are Latin
or Common, not scripts of their own; combining marks take their base letter's script."""

from __future__ import annotations

import pytest

from mechsteer.readouts import non_english as ne


@pytest.mark.parametrize(
    ("letter", "script"),
    [
        ("ª", "Latin"),  # FEMININE ORDINAL INDICATOR: Script=Latin
        ("º", "Latin"),  # MASCULINE ORDINAL INDICATOR
        ("ʰ", "Latin"),  # MODIFIER LETTER SMALL H: Script=Latin
        ("ﬁ", "Latin"),  # LATIN SMALL LIGATURE FI
        ("µ", "common"),  # MICRO SIGN: Script=Common
        ("ʼ", "common"),  # MODIFIER LETTER APOSTROPHE: Script=Common
        ("𝐀", "common"),  # MATHEMATICAL BOLD CAPITAL A: Script=Common
        ("ℓ", "common"),  # SCRIPT SMALL L: Script=Common
    ],
)
def test_letters_named_without_a_script_word_are_latin_or_common(letter, script):
    assert ne.token_script(letter) == script
    assert not ne.is_non_latin(ne.token_script(letter))
    assert ne.token_script("the" + letter) == "Latin"


@pytest.mark.parametrize(
    ("token", "script"),
    [
        ("Привет", "Cyrillic"),
        ("ѣ", "Cyrillic"),
        ("中文", "Han"),
        ("々", "Han"),
        ("مرحبا", "Arabic"),
        ("ﷲ", "Arabic"),  # ARABIC LIGATURE ALLAH ISOLATED FORM
        ("नमस्ते", "Devanagari"),
        ("ᎣᏏᏲ", "Cherokee"),
        ("ꦗꦮ", "Javanese"),
    ],
)
def test_real_scripts_keep_their_names_and_count_as_non_latin(token, script):
    assert ne.token_script(token) == script
    assert ne.is_non_latin(script)


def test_combining_marks_follow_their_base_letter():
    assert ne.letter_scripts("e\u0301") == ["Latin", "Latin"]
    assert ne.letter_scripts("ж\u0301\u0308") == ["Cyrillic"] * 3
    # two Latin letters, one Cyrillic letter with two accents: the accents are Cyrillic, so Cyrillic wins
    assert ne.token_script("ab" + "ж\u0301\u0308") == "Cyrillic"
    assert ne.token_script("жж" + "e\u0301\u0300") == "Latin"
    assert ne.token_script("1\u0301") == "common"  # on a digit, an accent is no letter of any script
    assert ne.token_script("\u0301") == "common"  # split off its base (byte-level BPE): used with many scripts
    assert ne.token_script("\u064b") == "common"  # ARABIC FATHATAN: used with Arabic and Syriac


def test_script_shares_count_only_real_non_latin_scripts():
    tokens = ["ª", "µ", "ʼs", "ʰ", "𝐀", "Привет", "中", "نص", "नम"]
    base = ne.vocab_baseline(tokens).iloc[0]
    assert base["n_non_latin"] == 4
    assert base["n[Latin]"] == 3 and base["n[common]"] == 2  # "ʼs" is Latin by its s
