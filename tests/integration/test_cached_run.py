"""A re-run whose cells are all cached imports neither torch nor transformers (it only reads records and
rewrites the report), and says that it ran nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

from mechsteer.api import load_study

DRIVER = """
import sys
from mechsteer.cli.app import app
try:
    app(["run", sys.argv[1], "-o", sys.argv[2], "-q"])
except SystemExit as e:
    assert e.code in (0, None), e.code
print("IMPORTED", "torch" in sys.modules, "transformers" in sys.modules)
"""


def test_fully_cached_run_does_not_import_torch(tmp_path):
    m = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    m.save_pretrained(tmp_path / "model")
    make_tiny_tokenizer().save_pretrained(tmp_path / "model")
    doc = {
        "name": "cached",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 4.0}},
        "conditions": {"base": [], "steer": [{"kind": "add", "vector": "v"}]},
        "readouts": {"first": {"kind": "first_token", "prompts": ["ab"], "template": "raw", "track": ["a"]}},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    load_study(tmp_path / "s.yaml").run(output_dir=tmp_path / "out")
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "s.yaml"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "ran 0 cells, 2 cached" in r.stdout, r.stdout
    assert "IMPORTED False False" in r.stdout, r.stdout
