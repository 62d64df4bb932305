"""Calibrated throughput rows for `mechsteer plan --estimate --throughput FILE`, from a recorded benchmark run.

Reads the JSON that `benchmarks/vllm_vs_hf.py` writes (benchmarks/gpu_check.sh runs it on the GPU as
`vllm_vs_hf_gpu`) and writes a throughput file (the layout of mechsteer/data/throughput.yaml) with one row per
model and engine measured: decode tokens/s at the benchmark's batch (all of the batch's sequences decoding
together: `decode_max`; per sequence: that over the batch), from its generation time less its prefill time.
Prompt tokens are not recorded by that benchmark, so prefill, teacher-forcing and training rates stay the
package's (a row's missing rate falls back to the package's row of its size class). A row calibrates only its
model's size class: the embedded model's run says nothing about a 7B model; run the benchmark with
`--models <local 7B folder>` on the GPU for that.

    python benchmarks/calibrate_throughput.py --gpu h100-80gb --gpu-name "NVIDIA H100 80GB" \\
        [--from benchmarks/results/vllm_vs_hf_gpu.json] [--out benchmarks/results/throughput_gpu.yaml]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from _sections import REPO, RESULTS, setup_env

setup_env()


def rows(record: dict, gpu: str) -> list[dict]:
    """Calibrated rate rows (hf and vllm) of every model a vllm_vs_hf record measured."""
    from mechsteer.engine.estimate import load_throughput
    from mechsteer.spec.model_configs import model_config

    table = load_throughput()
    batch, prompts = int(record["args"]["batch"]), int(record["args"]["tp_prompts"])
    when = record.get("_date")
    out = []
    for res in record["results"]:
        tp = res.get("throughput") or {}
        mc = model_config(res["model"])
        if not tp or mc is None:
            continue
        size = table.size_class(mc.n_params() / 1e9)
        for backend in ("hf", "vllm"):
            side = tp.get(backend)
            if not side:
                continue
            decode = (tp["tokens"] - prompts) / max(side["total_s"] - side["prefill_s"], 1e-9)
            out.append(
                {
                    "gpu": gpu,
                    "backend": backend,
                    "size": size,
                    "decode_per_sequence": round(decode / batch, 4),
                    "decode_max": round(decode, 3),
                    "source": f"calibrated: benchmarks/vllm_vs_hf.py on {res['model']} ({res['dtype']}, "
                    f"{res['device']}), batch {batch}, {tp['tokens']} tokens"
                    + (f", {when}" if when else "")
                    + f"; decode only (generation time less prefill), recorded in {record.get('_path', '?')}",
                }
            )
    return out


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", default=str(RESULTS / "vllm_vs_hf_gpu.json"))
    ap.add_argument("--gpu", required=True, help="the GPU kind's key, e.g. h100-80gb")
    ap.add_argument("--gpu-name", required=True, help="its name, e.g. 'NVIDIA H100 80GB HBM3'")
    ap.add_argument("--out", default=str(RESULTS / "throughput_gpu.yaml"))
    args = ap.parse_args()
    record = json.loads(Path(args.src).read_text())
    src = Path(args.src).resolve()
    record["_path"] = str(src.relative_to(REPO)) if REPO in src.parents else str(src)
    record["_date"] = datetime.fromtimestamp(src.stat().st_mtime, UTC).date().isoformat()
    doc = {
        "format": "mechsteer.throughput/1",
        "gpu": args.gpu,
        "gpus": {
            args.gpu: {
                "name": args.gpu_name,
                "factor": 1.0,
                "source": "a calibrated GPU: its own rows are used; for size classes it has none, the package's "
                "reference (H100) rows unscaled",
            }
        },
        "rates": rows(record, args.gpu),
    }
    Path(args.out).write_text(
        "# Written by benchmarks/calibrate_throughput.py; use with `mechsteer plan --estimate --throughput THIS`.\n"
        + yaml.safe_dump(doc, sort_keys=False, width=120)
    )
    print(f"wrote {args.out} ({len(doc['rates'])} calibrated rows)")


if __name__ == "__main__":
    main()
