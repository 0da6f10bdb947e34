#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests need beyond the .NET SDK:
#   qemu-system-arm        Debian's QEMU 7.2 (differential tests, the real-QEMU VMM tests)
#   gcc, libc6-dev,
#   linux-libc-dev         the C preload library, C example clients (<linux/vfio.h>)
#   device-tree-compiler   dtc, for the hand-made device trees of the audit tests
#   chromium               headless rendering checks of the HTML reports
#   python3                the README's real-QEMU scenario script (scripts/real-qemu.py), run by a test
#   clang, zlib1g-dev      Native AOT's linker prerequisites: the precompiled qtest launcher
#                          (scripts/qemu-system-aarch64-doorbell) starts in ~0.1 s instead of ~0.9 s (ReadyToRun)
# Idempotent and quiet: only what is missing is installed. Never fails the test run: a test whose tool is
# missing reports itself skipped with the reason.
set -u
need=()
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -f /usr/include/linux/vfio.h ] || need+=(linux-libc-dev)
command -v dtc >/dev/null 2>&1 || need+=(device-tree-compiler)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-deps: apt-get not available; tests needing ${need[*]} will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "setup-test-deps: not root and no passwordless sudo; tests needing ${need[*]} will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/dev/null 2>&1 \
  || echo "setup-test-deps: could not install ${need[*]}; tests needing them will be skipped" >&2
exit 0
