# Frozen build for this board: the firmware modules and this board's HAL are compiled into
# the MicroPython image and run in place from flash, so their bytecode (and, on ARM, their
# machine code) takes no heap. Build, in a MicroPython source tree (ports/rp2):
#   make BOARD=RPI_PICO2 FROZEN_MANIFEST=REPO/boards/rp2/manifest.py
# boot.py, main.py and board.json stay files on the board (v2g flash copies them);
# config.json is the device's own. Paths are relative to this file. tests_host/firmware/test_fit.py
# checks the lists (the firmware's in ../manifest_firmware.py).
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest_firmware.py", thumb=True)

DRIVERS = ('ad7606.py', 'power_stage.py')  # the shared chip drivers hal.py imports

for _name in DRIVERS:
    module(_name, base_path="../drivers", opt=3)
module("hal.py", base_path=".", opt=3)
