"""The per-cell code fingerprint: a cell's `source` covers the import closure of the engine and of its kinds'
modules, so editing a readout module changes that readout's cells and nothing else, while editing shared
code changes every cell; the packages that compute results are in it (vLLM only for cells that run on it).
Edits are made in copies of the package, never in the checkout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mechsteer.api import load_study
from mechsteer.engine import code_version
from mechsteer.engine.code_version import EXCLUDED, PACKAGE_ROOT, SourceTree, code_fingerprint


def _copy_package(dest: Path) -> Path:
    root = dest / "mechsteer"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "data"))
    return root


def _append(root: Path, rel: str, line: str) -> None:
    with open(root / rel, "a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """The package as it is, with a readout module edited, and with shared code edited."""
    base = tmp_path_factory.mktemp("trees")
    same = _copy_package(base / "same")
    readout = _copy_package(base / "readout")
    _append(readout, "readouts/first_token.py", "_EDITED = 1  # a real statement, not a comment")
    shared = _copy_package(base / "shared")
    _append(shared, "generation.py", "_EDITED = 1")
    return {"same": SourceTree(same), "readout": SourceTree(readout), "shared": SourceTree(shared)}


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    """A study with an evaluation task and two readouts on a local model folder (compiled, never loaded)."""
    tmp = tmp_path_factory.mktemp("study")
    (tmp / "model").mkdir()
    cfg = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 4, "architectures": ["LlamaForCausalLM"]}
    (tmp / "model" / "config.json").write_text(json.dumps(cfg))
    doc = {
        "name": "fp",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 2},
        "readouts": {
            "first": {"kind": "first_token", "prompts": ["ab"], "template": "raw", "track": ["a"]},
            "gen": {"kind": "generate", "prompts": ["ab"], "template": "raw", "max_new_tokens": 2},
        },
    }
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc))
    return tmp / "s.yaml"


def _sources(study_file, tree, monkeypatch) -> dict[tuple[str, str], str]:
    monkeypatch.setattr(code_version, "TREE", tree)
    plan = load_study(study_file).plan(output_dir=study_file.parent / "out")
    return {(c.condition, c.measurement.id): c.code["source"] for c in plan.cells}


def test_editing_a_readout_changes_only_its_cells(study_file, trees, monkeypatch):
    before = _sources(study_file, trees["same"], monkeypatch)
    after = _sources(study_file, trees["readout"], monkeypatch)
    assert before.keys() == after.keys() and len(before) == 6
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("base", "readout:first"), ("steer", "readout:first")}


def test_editing_shared_code_changes_every_cell(study_file, trees, monkeypatch):
    before = _sources(study_file, trees["same"], monkeypatch)
    after = _sources(study_file, trees["shared"], monkeypatch)
    assert all(before[k] != after[k] for k in before)


def test_the_installed_tree_matches_a_faithful_copy(study_file, trees, monkeypatch):
    """The fingerprint depends on code only, not on where the package lives."""
    assert _sources(study_file, trees["same"], monkeypatch) == _sources(
        study_file, code_version.SourceTree(), monkeypatch
    )


def test_closure_follows_imports_inside_functions_and_parent_packages(tmp_path):
    root = tmp_path / "mechsteer"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("X = 1\n")
    (root / "a.py").write_text("def f():\n    from mechsteer.sub import b\n    return b\n")
    (root / "sub" / "b.py").write_text("Y = 2\n")
    (root / "c.py").write_text("Z = 3\n")
    tree = SourceTree(root)
    assert tree.closure(frozenset({"mechsteer.a"})) == {"mechsteer.a", "mechsteer.sub", "mechsteer.sub.b"}
    with pytest.raises(KeyError):
        tree.closure(frozenset({"mechsteer.missing"}))  # a mistyped impl never covers less silently


def test_docstrings_and_comments_do_not_count(tmp_path):
    a, b = tmp_path / "a" / "mechsteer", tmp_path / "b" / "mechsteer"
    a.mkdir(parents=True), b.mkdir(parents=True)
    (a / "m.py").write_text("def f():\n    return 1\n")
    (b / "m.py").write_text('def f():\n    """Says what."""\n    # and why\n    return 1\n')
    roots = frozenset({"mechsteer.m"})
    assert SourceTree(a).fingerprint(roots) == SourceTree(b).fingerprint(roots)


def test_every_exclusion_names_an_existing_path():
    assert [e for e in EXCLUDED if not (PACKAGE_ROOT / e).exists()] == []


def test_result_packages_are_in_the_fingerprint():
    hf = code_fingerprint(["mechsteer.readouts.generate"])["packages"]
    vllm = code_fingerprint(["mechsteer.eval.vllm_backend"], vllm=True)["packages"]
    for name in ("torch", "transformers", "tokenizers", "numpy", "scipy", "sympy", "datasets", "lm_eval"):
        assert name in hf and name in vllm
    assert "vllm" in vllm and "vllm" not in hf


def test_a_vllm_cell_carries_the_backend_module(study_file, monkeypatch):
    """Only cells that run on vLLM carry its module (and the package) in their fingerprint."""
    from mechsteer.engine.plan import BACKENDS

    tree = code_version.SourceTree()
    eval_hf = code_fingerprint(["mechsteer.eval.runner"], tree=tree)
    eval_vllm = code_fingerprint(["mechsteer.eval.runner", BACKENDS["vllm"]], vllm=True, tree=tree)
    assert eval_hf["source"] != eval_vllm["source"]
    engine = tree.closure(frozenset(code_version.ENGINE_ROOTS))
    assert BACKENDS["vllm"] not in engine and "mechsteer.readouts.first_token" not in engine
