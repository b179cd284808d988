# Frozen build for this board: the firmware modules and this board's HAL are compiled into
# the MicroPython image and run in place from flash, so their bytecode (and, on ARM, their
# machine code) takes no heap. Build, in a MicroPython source tree (ports/rp2):
#   make BOARD=RPI_PICO2 FROZEN_MANIFEST=REPO/boards/rp2/manifest.py
# boot.py, main.py and board.json stay files on the board (v2g flash copies them);
# config.json is the device's own. Paths are relative to this file. tests_host/firmware/test_fit.py
# checks that FIRMWARE lists every module of firmware/ a board imports.
include("$(PORT_DIR)/boards/manifest.py")

FIRMWARE = (
    "app.py",
    "bootslot.py",
    "config_store.py",
    "contactor.py",
    "current.py",
    "eventlog.py",
    "events.py",
    "grid_measure.py",
    "grid_protect.py",
    "islanding.py",
    "meter.py",
    "params.py",
    "pll.py",
    "protect_fast.py",
    "supervisor.py",
    "svpwm.py",
    "tables.py",
    "thermal.py",
    "tick.py",
    "tick_fused.py",
)
# ARM Cortex-M: the fused tick calling the asm_thumb kernels (tick imports it when
# tick_thumb, which only compiles where the inline Thumb assembler exists, is there)
THUMB = ("tick_fused_thumb.py",)
DRIVERS = ('ad7606.py', 'power_stage.py')  # the shared chip drivers hal.py imports

for _name in FIRMWARE + THUMB:
    module(_name, base_path="../../firmware", opt=3)
module("tick_thumb.py", base_path="../../firmware/thumb", opt=3)
package("services", base_path="../../firmware", opt=3)
for _name in DRIVERS:
    module(_name, base_path="../drivers", opt=3)
module("hal.py", base_path=".", opt=3)
