"""Validation of the mechanistic readout kinds before any model loads: each broken study gives one located
`file:line` error naming the field and a fix; the good study validates; a multi-token `track` is refused by
the tokenizer check with the field's name."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mechsteer.cli.app import app
from mechsteer.errors import MechsteerError

GOOD = """\
name: t
models:
  m: {id: smollm2-135m}
vectors:
  v: {kind: random, norm: 1.0}
conditions:
  base: []
  steer: [{kind: add, vector: v}]
  lora: [{kind: lora1, path: lora.safetensors}]
readouts:
  lens: {kind: logit_lens, conditions: [steer], unembedding_bias: true, prompts: [hi], sources: [0, 29]}
  stats: {kind: vector_stats, layers: [0, last]}
  scripts: {kind: non_english, ks: [50, 1000]}
  persist: {kind: persistence, conditions: [steer], prompts: [hi], targets: all}
  shift: {kind: token_shift, conditions: [steer], reference: base, prompts: [hi]}
  alpha: {kind: tokenwise, conditions: [lora], prompts: [hi]}
"""

CASES = [
    (
        "bad-layer",
        GOOD.replace("sources: [0, 29]", "sources: [0, 30]"),
        ["readouts.lens.sources", "s.yaml:11", "out of range"],
    ),
    ("bad-stats-layer", GOOD.replace("layers: [0, last]", "layers: [0, 31]"), ["readouts.stats.layers", "s.yaml:12"]),
    ("bad-target", GOOD.replace("targets: all", "targets: {depth: 2}"), ["readouts.persist.targets", "s.yaml:14"]),
    (
        "unknown-reference",
        GOOD.replace("reference: base", "reference: bsae"),
        ["readouts.shift.reference", "s.yaml:15", "unknown condition 'bsae'", "base, steer, lora"],
    ),
    (
        "tokenwise-without-lora1",
        GOOD.replace("conditions: [lora], prompts", "conditions: [steer], prompts"),
        ["readouts.alpha.conditions", "s.yaml:16", "no lora1 intervention", "restrict the readout"],
    ),
    (
        "tokenwise-on-all-conditions",
        GOOD.replace("{kind: tokenwise, conditions: [lora], ", "{kind: tokenwise, "),
        ["readouts.alpha.kind", "condition 'base'", "no lora1"],
    ),
    (
        "persistence-without-add",
        GOOD.replace("{kind: persistence, conditions: [steer]", "{kind: persistence, conditions: [lora]"),
        ["readouts.persist.conditions", "no add intervention"],
    ),
    (
        "bias-without-add",
        GOOD.replace("{kind: logit_lens, conditions: [steer]", "{kind: logit_lens, conditions: [base]"),
        ["readouts.lens.conditions", "condition 'base'", "no add"],
    ),
    (
        "bias-without-prompts",
        GOOD.replace("unembedding_bias: true, prompts: [hi]", "unembedding_bias: true"),
        ["readouts.lens", "unembedding_bias needs prompts"],
    ),
    ("k-too-large", GOOD.replace("ks: [50, 1000]", "ks: [50, 5000]"), ["readouts.scripts", "1..1000"]),
    ("unknown-field", GOOD.replace("reference: base", "referenc: base"), ["readouts.shift.referenc", "Extra inputs"]),
]


@pytest.fixture
def study(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file(
        {"A": torch.zeros(30, 1536), "B": torch.zeros(30, 576), "layers": torch.tensor([3])},
        str(tmp_path / "lora.safetensors"),
    )

    def write(text):
        p = tmp_path / "s.yaml"
        p.write_text(text)
        return p

    return write


def test_good_readouts_validate(study):
    r = CliRunner().invoke(app, ["validate", str(study(GOOD))])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("case,text,fragments", CASES, ids=[c[0] for c in CASES])
def test_broken_readout_gets_a_located_error(study, case, text, fragments):
    p = study(text)
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for frag in fragments:
        assert frag in r.output, f"{frag!r} not in:\n{r.output}"


def test_multi_token_track_is_refused_with_the_field_name():
    from tiny_tokenizer import make_tiny_tokenizer

    from mechsteer.readouts.token_shift_kind import tracked_ids

    tok = make_tiny_tokenizer()
    assert tracked_ids(tok, ["a"]) == {"a": tok.convert_tokens_to_ids("a")}
    with pytest.raises(MechsteerError, match=r"token_shift.track: 'To' is 2 tokens"):
        tracked_ids(tok, ["a", "To"])
