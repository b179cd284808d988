"""Runs first at every reset (power-up, watchdog, soft reboot): gates off, contactors open,
before anything else is imported or can fail. A soft reboot on some ports leaves the PWM
peripheral running at its last duty, so this cannot wait for main.py.
Context: boot.
"""

import hal

hal.safe_outputs()
