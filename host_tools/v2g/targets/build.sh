#!/usr/bin/env bash
# Build the target instruments from a MicroPython source tree (never from this repo).
#
#   build.sh SRC OUT [STEP...]      STEP: deps mpy-cross unix32 (default: all of them)
#
# SRC: a MicroPython source tree (git checkout or `git archive` export; submodules are
# not needed: what needs them is switched off). OUT: where binaries and object files go
# (the Makefile passes build/targets). Nothing is written into SRC.
#
# Outputs in OUT:
#   micropython-32   the unix port built for 32-bit x86 (gcc -m32, Debian gcc-multilib):
#                    32-bit machine words, as on the boards
#   obj/             object trees, one per build
set -euo pipefail

SRC=${1:?usage: build.sh MICROPYTHON_SRC OUT_DIR [STEP...]}
OUT=${2:?usage: build.sh MICROPYTHON_SRC OUT_DIR [STEP...]}
shift 2
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(deps mpy-cross unix32)

JOBS=${JOBS:-2}
SRC=$(cd "$SRC" && pwd)
mkdir -p "$OUT/obj"
OUT=$(cd "$OUT" && pwd)
OBJ=$OUT/obj

if [ ! -f "$SRC/py/mpconfig.h" ] || [ ! -d "$SRC/ports/unix" ]; then
  echo "build.sh: $SRC is not a MicroPython source tree (no py/mpconfig.h)" >&2
  exit 2
fi

say() { echo "targets: $*"; }

# Debian packages, installed only when missing (as the `tools` target does for valgrind).
need_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "build.sh: missing Debian packages ${missing[*]} and no apt-get" >&2
    return 1
  fi
  local sudo=
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

step_deps() {
  need_pkgs gcc-multilib gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
}

# mpy-cross from the same tree: the unix port freezes asyncio with it.
MPYCROSS=$OBJ/mpy-cross/mpy-cross
step_mpy_cross() {
  make -s -j"$JOBS" -C "$SRC/mpy-cross" BUILD="$OBJ/mpy-cross"
  say "built $MPYCROSS"
}

# The unix port on 32-bit words. Off: what needs a submodule (btree: berkeley-db, ssl:
# mbedtls, ffi: libffi for i386) and micropython-lib's frozen packages; asyncio (from
# extmod, no submodule) stays frozen, as in the PyPI runtime.
step_unix32() {
  [ -x "$MPYCROSS" ] || step_mpy_cross
  # The manifest uses nothing from micropython-lib, but the build insists on its README.
  mkdir -p "$OBJ/no-micropython-lib" && touch "$OBJ/no-micropython-lib/README.md"
  echo 'include("$(MPY_DIR)/extmod/asyncio")' > "$OBJ/unix32-manifest.py"
  make -s -j"$JOBS" -C "$SRC/ports/unix" \
    BUILD="$OBJ/unix32" CC="gcc -m32" \
    MICROPY_MPYCROSS="$MPYCROSS" MICROPY_MPYCROSS_DEPENDENCY= \
    MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0 \
    MPY_LIB_DIR="$OBJ/no-micropython-lib" \
    FROZEN_MANIFEST="$OBJ/unix32-manifest.py"
  cp "$OBJ/unix32/micropython" "$OUT/micropython-32"
  say "built $OUT/micropython-32 ($(file -b "$OUT/micropython-32" | cut -d, -f1-2))"
}

for s in "${STEPS[@]}"; do
  case $s in
    deps) step_deps ;;
    mpy-cross) step_mpy_cross ;;
    unix32) step_unix32 ;;
    *) echo "build.sh: unknown step $s" >&2; exit 2 ;;
  esac
done
