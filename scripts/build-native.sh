#!/usr/bin/env bash
# Builds libdoorbell-vfio.so and the C examples from source with the machine's gcc (nothing prebuilt is committed).
# Output: native/build/. Rebuilds only what is older than its sources. Exit 3 when gcc or <linux/vfio.h> is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/native/build"
if ! command -v gcc >/dev/null 2>&1; then echo "build-native: gcc not found (scripts/setup-test-deps.sh installs it)" >&2; exit 3; fi
if ! echo '#include <linux/vfio.h>' | gcc -E -x c - >/dev/null 2>&1; then
  echo "build-native: <linux/vfio.h> not found (Debian package linux-libc-dev)" >&2; exit 3
fi
mkdir -p "$out"
lib_src=("$root"/native/libdoorbell-vfio/*.c "$root"/native/libdoorbell-vfio/*.h)
build() { # target, sources…: true when target is missing or older than a source
  local t="$1"; shift
  [ -e "$t" ] || return 0
  for s in "$@"; do [ "$s" -nt "$t" ] && return 0; done
  return 1
}
if build "$out/libdoorbell-vfio.so" "${lib_src[@]}"; then
  gcc -O2 -g -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -o "$out/libdoorbell-vfio.so" \
    "$root"/native/libdoorbell-vfio/doorbell_vfio.c "$root"/native/libdoorbell-vfio/x86_decode.c -ldl -lpthread
fi
for src in "$root"/examples/c/*.c; do
  exe="$out/$(basename "${src%.c}")"
  if build "$exe" "$src"; then gcc -O2 -g -Wall -Wextra -Werror -o "$exe" "$src"; fi
done
echo "$out"
