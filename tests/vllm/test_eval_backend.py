"""`mechsteer run` with `backend: vllm` (tests/vllm/study_vllm.yaml, profile `vllm`) gives the metrics and
the completions of the same study on HF, and its cells' keys differ from the HF cells' only by the backend.
Both runs go through the CLI in a fresh interpreter, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from vllm_shared import HERE, REPO, require_vllm

require_vllm()

STUDY = HERE / "study_vllm.yaml"


def _run(out, *profile):
    cmd = [sys.executable, "-m", "mechsteer.cli.app", "run", str(STUDY), *profile, "-o", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cells = {}
    for d in sorted(f.parent for f in out.glob("*/cells/*/cell.json")):
        rec = json.loads((d / "cell.json").read_text())
        samples = [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()]
        cells[rec["conditions"][0]] = (
            rec,
            json.loads((d / "metrics.json").read_text()),
            {s["doc"]["id"]: s["filtered_resps"] for s in samples},
        )
    return cells


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # nan == nan for metrics no problem reached


def test_vllm_run_equals_the_hf_run(tmp_path):
    hf = _run(tmp_path / "hf")
    vl = _run(tmp_path / "vllm", "-p", "vllm")
    assert set(hf) == set(vl) == {"base", "steered"}
    for cond in hf:
        (rec_h, met_h, resp_h), (rec_v, met_v, resp_v) = hf[cond], vl[cond]
        assert rec_v["info"]["backend"] == "vllm" and rec_v["info"]["vllm_version"].startswith("vllm")
        assert "backend" not in rec_h["info"]
        assert set(met_h) == set(met_v) and all(_same(met_h[k], met_v[k]) for k in met_h), cond
        assert resp_h == resp_v and len(resp_h) == 8, cond
        key_v = dict(rec_v["key"])
        assert key_v.pop("backend") == "vllm" and key_v == rec_h["key"] and rec_v["hash"] != rec_h["hash"]
    assert hf["steered"][1]["acc_lenient"] != hf["base"][1]["acc_lenient"]  # the conditions differ
