"""CONTRIBUTING.md's recipe for an intervention kind, followed literally: its example code passes ruff, and its
two files, written into a copy of the package with nothing else changed, give a kind that the schema lists,
`validate` checks, the compiler plans, replay starts at its own first block, and vLLM planning keeps on HF
with the kind's own reason. A subprocess imports the copy (so the repository's package is not touched)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _recipe() -> list[str]:
    """The two code blocks of CONTRIBUTING.md's "An intervention: two files" (spec, implementation)."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text[text.index("### An intervention") : text.index("### A readout")]
    blocks = [textwrap.dedent(b) + "\n" for b in re.findall(r"```python\n(.*?)\n\s*```", section, re.S)]
    assert len(blocks) == 2, "CONTRIBUTING.md's intervention recipe should show the spec and the implementation"
    return blocks


def _ruff(*args: str, stdin: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is not installed: it is part of the `test` extra"
    return subprocess.run([exe, *args], input=stdin, cwd=REPO, capture_output=True, text=True)


def test_the_recipes_example_passes_ruff():
    for code, where in zip(_recipe(), ("spec/kinds", "interventions"), strict=True):
        name = f"mechsteer/{where}/scale_resid.py"
        r = _ruff("check", "--stdin-filename", name, "-", stdin=code)
        assert r.returncode == 0, f"{name} from CONTRIBUTING.md:\n{r.stdout}{r.stderr}"
        r = _ruff("format", "--check", "--stdin-filename", name, "-", stdin=code)
        assert r.returncode == 0, f"{name} from CONTRIBUTING.md is not formatted:\n{r.stdout}{r.stderr}"


RECIPE_RUN = """
import json, sys
from pathlib import Path

import torch
from pydantic import TypeAdapter
from transformers import LlamaConfig, LlamaForCausalLM

from mechsteer.backends.expressible import vllm_expressible
from mechsteer.engine.plan import compile_study
from mechsteer.errors import SpecError
from mechsteer.interventions import steering
from mechsteer.models.adapters import adapter_for
from mechsteer.replay import earliest_block, record, replay
from mechsteer.spec.loader import load_study_dict
from mechsteer.spec.study import InterventionSpec

out = {"impl_file": str(Path(sys.modules["mechsteer"].__file__).parent)}
study = {
    "name": "recipe",
    "models": {"m": {"id": "smollm2-135m"}},
    "conditions": {"base": [], "half": [{"kind": "scale_resid", "layer": "penultimate", "factor": 0.5}]},
    "readouts": {"r": {"kind": "first_token", "prompts": ["a"]}},
}
plan = compile_study(load_study_dict(study), output_root=sys.argv[1])
cell = next(c for c in plan.cells if c.condition == "half")
out["bound_layer"] = cell.interventions[0].layer
out["earliest"] = earliest_block(list(cell.interventions), 30)
out["vllm"] = list(vllm_expressible(list(cell.interventions)))
out["hashes"] = len({c.hash for c in plan.cells})
bad = {**study, "conditions": {"far": [{"kind": "scale_resid", "layer": 99}]}}
try:
    load_study_dict(bad)
except SpecError as e:
    out["bad_layer"] = str(e)
on_vllm = {**study, "backend": "vllm", "evaluation": {"tasks": ["mini"], "protocol": "greedy", "limit": 2}}
cells = compile_study(load_study_dict(on_vllm, check_refs=False), output_root=sys.argv[1]).cells
out["vllm_cells"] = sorted({(c.condition, c.backend, c.backend_note or "") for c in cells if c.measurement.kind == "eval"})

torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64,
)
model = LlamaForCausalLM(cfg).eval()
ad = adapter_for(model)
spec = TypeAdapter(InterventionSpec).validate_python({"kind": "scale_resid", "layer": [2, 3], "factor": 0.5})
ids = torch.randint(0, 64, (2, 7))
first = earliest_block([spec], 4)
with torch.no_grad():
    base, states = record(model, ad, [first], input_ids=ids)
    with steering(model, ad, [spec], {}):
        full = model(input_ids=ids).logits
        rep = replay(model, ad, states[first])
out["first"] = first
out["changed"] = float((full - base).abs().max())
out["replay_diff"] = float((rep - full).abs().max())
out["tol"] = float(64 * torch.finfo(full.dtype).eps * full.abs().max())
print(json.dumps(out))
"""


def test_a_kind_added_by_the_recipe_needs_no_other_edit(tmp_path):
    """CONTRIBUTING.md's example, written as its two files into a copy of the package (nothing else changed):
    the schema lists it, `validate` range-checks its layer, the compiler binds it and plans its cells, replay
    starts at its own first block and equals a full forward, and vLLM planning names the kind's own reason
    for keeping it on HF."""
    spec_code, impl_code = _recipe()
    pkg = tmp_path / "mechsteer"
    shutil.copytree(REPO / "mechsteer", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "spec" / "kinds" / "scale_resid.py").write_text(spec_code)
    (pkg / "interventions" / "scale_resid.py").write_text(impl_code)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}

    schema = subprocess.run(
        [sys.executable, "-m", "mechsteer.cli.app", "schema", "--out-dir", str(tmp_path / "schemas")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    kinds = json.loads((tmp_path / "schemas" / "study.schema.json").read_text())["$defs"]
    assert kinds["ScaleResidSpec"]["properties"]["kind"]["const"] == "scale_resid"

    r = subprocess.run(
        [sys.executable, "-c", RECIPE_RUN, str(tmp_path / "outputs")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["impl_file"] == str(pkg)  # the copy ran, not the repository's package
    assert out["bound_layer"] == 28 and out["earliest"] == 28  # penultimate of the embedded model's 30 blocks
    assert out["hashes"] == 2  # base and half are different cells
    assert "conditions.far[0].layer" in out["bad_layer"] and "99" in out["bad_layer"]
    reason = "scale_resid multiplies the residual stream, which a down_proj bias cannot express"
    assert out["vllm"] == [False, reason]
    assert out["vllm_cells"] == [["base", "vllm", ""], ["half", "hf", reason]]
    assert out["first"] == 2 and out["changed"] > 1e-3 and out["replay_diff"] <= out["tol"]
