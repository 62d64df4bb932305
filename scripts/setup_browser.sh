#!/usr/bin/env bash
# Install the headless browser the report.html test drives (Debian's chromium + chromium-driver), idempotent.
# Installs only as root on a machine with apt-get (CI, containers); anywhere else it says why it did nothing,
# and the browser test then skips with that reason.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "setup_browser: not root, so chromium is not installed (as root: apt-get install chromium chromium-driver)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: no apt-get here, so chromium is not installed (install chromium and its chromedriver)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
  || { echo "setup_browser: apt-get could not install chromium chromium-driver" >&2; exit 1; }
