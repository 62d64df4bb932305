"""`mechsteer train` with `rollouts: vllm` (tests/vllm/train_vllm.yaml) trains the embedded model's all-layer
vectors for two steps: the trainer starts its own engine, syncs the vectors into it at every step, writes
the vectors, and stops the engine at the end."""

from __future__ import annotations

import json
import subprocess
import sys

from vllm_shared import HERE, REPO, require_vllm

from mechsteer.vectors.vector_set import load_vector_set

require_vllm()


def test_train_with_vllm_rollouts(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mechsteer.cli.app", "train", str(HERE / "train_vllm.yaml"), "--output", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "vLLM rollout engine started" in r.stdout
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["type"] == "step"]
    assert [s["step"] for s in steps] == [1, 2]
    assert "t_engine_start" in steps[0] and "t_engine_start" not in steps[1]
    assert all(s["t_sync"] >= 0 and s["n_tokens"] > 0 for s in steps)
    vs = load_vector_set(out / "vectors.safetensors")
    assert vs.layers == list(range(30))
    # the vectors moved exactly when some group had both outcomes (else every advantage is 0)
    assert (float(vs.vectors.norm()) > 0) == any(s["groups_with_signal"] > 0 for s in steps)
