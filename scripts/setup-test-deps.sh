#!/usr/bin/env bash
# Installs what the differential tests need: Debian's qemu-system-aarch64 (package qemu-system-arm).
# Idempotent and quiet. Never fails the test run: when apt is unavailable the differential tests skip
# themselves (visibly) because the binary is missing.
set -u
if command -v qemu-system-aarch64 >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-deps: apt-get not available; QEMU differential tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "setup-test-deps: not root and no passwordless sudo; QEMU differential tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends qemu-system-arm; } >/dev/null 2>&1 \
  || echo "setup-test-deps: could not install qemu-system-arm; QEMU differential tests will be skipped" >&2
exit 0
