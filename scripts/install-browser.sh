#!/usr/bin/env bash
# Installs Debian's headless Chromium for the browser end-to-end test (tests/e2e/test_browser_sse.py)
# when it is missing. Idempotent; needs root (CI runs as root). Safe to call from .ci/run.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
