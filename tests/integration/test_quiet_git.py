"""A study run outside any git checkout records "no git" quietly: nothing about git reaches the terminal
(lm-eval's `git describe` probe used to print `fatal: not a git repository` once per eval cell)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]

STUDY = """\
name: nogit
models:
  tiny: {id: ./tiny_model, dtype: float32, max_length: 256}
conditions:
  base: []
evaluation:
  tasks: [mini]
  protocol: paper
  seeds: [0, 1]
  limit: 1
  max_new_tokens: 2
  batch_size: 1
"""


def test_eval_run_outside_git_prints_nothing_about_git(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    make_tiny_model("llama", vocab_size=VOCAB_SIZE, max_position_embeddings=512).save_pretrained(folder / "tiny_model")
    make_tiny_tokenizer().save_pretrained(folder / "tiny_model")
    (folder / "study.yaml").write_text(textwrap.dedent(STUDY))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
    }  # git must not find a repository above `folder`
    assert (
        subprocess.run(
            ["git", "rev-parse", "--git-dir"], cwd=folder, env=env, capture_output=True, check=False
        ).returncode
        != 0
    )
    r = subprocess.run(
        [sys.executable, "-m", "mechsteer.cli.app", "run", "study.yaml", "-o", "out", "--quiet"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "ran 2 cells" in r.stdout
    assert "git" not in r.stderr.lower(), r.stderr
    results = [json.loads(p.read_text()) for p in (folder / "out").glob("nogit/cells/*/lm_eval_results.json")]
    assert len(results) == 2 and all(res["git_hash"] is None for res in results)
