# The firmware part of every board's frozen build, included by boards/<name>/manifest.py:
#   include("../manifest_firmware.py", thumb=True)     # ARM Cortex-M boards
# Freezes every firmware module a board imports (boot.py and main.py stay files; the
# fused compute on its own is for the host bench and checks only) and the services
# package. With thumb=True also the fused tick calling the asm_thumb kernels and the
# kernels themselves (firmware/thumb/, which compiles only where the inline Thumb
# assembler exists; tick imports them when they are there). Paths are relative to this
# file. tests_host/firmware/test_fit.py checks FIRMWARE against firmware/.
options.defaults(thumb=False)

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
THUMB = ("tick_fused_thumb.py",)

for _name in FIRMWARE + (THUMB if options.thumb else ()):
    module(_name, base_path="../firmware", opt=3)
if options.thumb:
    module("tick_thumb.py", base_path="../firmware/thumb", opt=3)
package("services", base_path="../firmware", opt=3)
