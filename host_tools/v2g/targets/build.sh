#!/usr/bin/env bash
# Build the target instruments from a MicroPython source tree (never from this repo).
#
#   build.sh SRC OUT [STEP...]
#   STEP: deps mpy-cross unix32 qemu-m0 qemu-m4 qemu-m7 plugin cref (default: all of them),
#         or heap-m0=BYTES / heap-m4=BYTES / heap-m7=BYTES (relink that core's image with
#         another GC heap)
#
# SRC: a MicroPython source tree (git checkout or `git archive` export; submodules are
# not needed: what needs them is switched off). OUT: where binaries and object files go
# (the Makefile passes build/targets). Nothing is written into SRC.
#
# Outputs in OUT:
#   micropython-32   the unix port built for 32-bit x86 (gcc -m32, Debian gcc-multilib):
#                    32-bit machine words, as on the boards
#   qemu-m0-heapN.elf  MicroPython's qemu port, board MICROBIT (nRF51, Cortex-M0 =
#                    ARMv6-M, the RP2040's ISA) with the viper/native emitter switched on,
#                    GC heap N bytes (run with -global nrf51-soc.sram-size=1048576)
#   qemu-m4-heapN.elf  the qemu port on an MPS2 AN386 (Cortex-M4F, ARMv7E-M with
#                    single-precision FPU, hard float: the mpy_arch armv7emsp of the Pico 2's
#                    Cortex-M33), a board folder written here (upstream has AN385/M3 and
#                    AN500/M7 only)
#   qemu-m7-heapN.elf  upstream's MPS2_AN500 board (Cortex-M7 with double-precision FPU,
#                    ARMv7E-M, armv7emdp: the STM32H743's ISA and float ABI); viper is on
#                    there by default (mpconfigport.h: MICROPY_EMIT_THUMB on Thumb-2 cores)
#   insn_count.so    the qemu plugin counting instructions between markers
#   cref-m0.elf, cref-m4.elf, cref-m7.elf  the C reference for each core (v2g.targets.build_cref, which
#                    also rebuilds them on use: the header follows firmware/); $PYTHON
#                    (default python3) runs it
#   micropython_src  the source tree used, for later heap relinks
#   obj/             object trees, one per build
# The GC heap is a static array sized at compile time (MICROPY_HEAP_SIZE, used by the
# port's main.c alone): a heap relink recompiles main.c and links again (seconds).
set -euo pipefail

SRC=${1:?usage: build.sh MICROPYTHON_SRC OUT_DIR [STEP...]}
OUT=${2:?usage: build.sh MICROPYTHON_SRC OUT_DIR [STEP...]}
shift 2
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(deps mpy-cross unix32 qemu-m0 qemu-m4 qemu-m7 plugin cref)
HERE=$(cd "$(dirname "$0")" && pwd)
# Default GC heaps (bytes): each board's heap_bytes (boards/<name>/board.json) on its
# core: the RP2040 reference (M0, v2g.targets.REFERENCE), rp2 = Pico 2 (M4F), stm32 =
# NUCLEO-H743ZI (M7). Other heaps are relinked on demand (v2g.targets.image).
HEAP_M0=${HEAP_M0:-196608}
HEAP_M4=${HEAP_M4:-440000}
HEAP_M7=${HEAP_M7:-450000}

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

# MicroPython's qemu port. No frozen modules (upstream's need micropython-lib).
qemu_make() {  # core heap
  local core=$1 heap=$2 board args=()
  case $core in
    m0) board=MICROBIT
        args=(CFLAGS_EXTRA="-DMICROPY_EMIT_THUMB=1 -DMICROPY_EMIT_INLINE_THUMB=1") ;;
    m4) board=MPS2_AN386
        mkdir -p "$OBJ/boards/$board"
        cat > "$OBJ/boards/$board/mpconfigboard.mk" <<'MK'
QEMU_ARCH = arm
QEMU_MACHINE = mps2-an386
CFLAGS += -mthumb -mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16
CFLAGS += -DQEMU_SOC_MPS2
CFLAGS += -DMICROPY_HW_MCU_NAME='"Cortex-M4F"'
LDSCRIPT = mcu/arm/mps2.ld
SRC_BOARD_O = shared/runtime/gchelper_native.o shared/runtime/gchelper_thumb2.o
MPY_CROSS_FLAGS += -march=armv7emsp
MICROPY_FLOAT_IMPL = float
SUPPORTS_HARDWARE_FP_SINGLE = 1
MK
        args=(BOARD_DIR="$OBJ/boards/$board") ;;
    m7) board=MPS2_AN500 ;;
  esac
  (
    flock 9
    # only main.c uses MICROPY_HEAP_SIZE; make does not track flags, so drop its object
    rm -f "$OBJ/qemu-$core/main.o"
    make -s -j"$JOBS" -C "$SRC/ports/qemu" BOARD=$board BUILD="$OBJ/qemu-$core" \
      FROZEN_MANIFEST= MICROPY_HEAP_SIZE="$heap" "${args[@]}" "$OBJ/qemu-$core/firmware.elf"
    cp "$OBJ/qemu-$core/firmware.elf" "$OUT/qemu-$core-heap$heap.elf"
  ) 9>"$OBJ/qemu-$core.lock"
  say "built $OUT/qemu-$core-heap$heap.elf"
}

step_plugin() {
  gcc -O2 -Wall -Wextra -shared -fPIC -fvisibility=hidden \
    -o "$OUT/insn_count.so" "$HERE/insn_count.c"
  say "built $OUT/insn_count.so"
}

step_cref() {
  V2G_TARGETS_DIR="$OUT" PYTHONPATH="$HERE/../.." "${PYTHON:-python3}" -c \
    'from v2g import targets; [print("targets: built", targets.build_cref(c)) for c in targets.CORES]'
}

echo "$SRC" > "$OUT/micropython_src"
for s in "${STEPS[@]}"; do
  case $s in
    deps) step_deps ;;
    mpy-cross) step_mpy_cross ;;
    unix32) step_unix32 ;;
    qemu-m0) qemu_make m0 "$HEAP_M0" ;;
    qemu-m4) qemu_make m4 "$HEAP_M4" ;;
    qemu-m7) qemu_make m7 "$HEAP_M7" ;;
    heap-m0=*|heap-m4=*|heap-m7=*) c=${s%%=*}; qemu_make "${c#heap-}" "${s#*=}" ;;
    plugin) step_plugin ;;
    cref) step_cref ;;
    *) echo "build.sh: unknown step $s" >&2; exit 2 ;;
  esac
done
