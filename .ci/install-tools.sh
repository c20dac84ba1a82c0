#!/usr/bin/env bash
# CI: the system tools some tests check our output with, from the system's package manager (no download of
# its own): a headless Chromium for the review page's browser test, and dicom3tools' dciodvfy, an
# independent DICOM validator, for our SEG and the test suite's vendor-like series. Idempotent.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "tools: $(command -v chromium || command -v chromium-browser), $(command -v dciodvfy)"
