"""Runs first at every reset (power-up, watchdog, soft reboot): choose the firmware tree
(A/B slots, ``bootslot``) before any of it is imported, then gates off, contactors open,
before anything else is imported or can fail. A soft reboot on some ports leaves the PWM
peripheral running at its last duty, so this cannot wait for main.py.
``bootslot.select()`` never raises; it reads the pointer and hashes the chosen tree
(a few ms to ~0.2 s), during which the outputs are still in their reset state (gates off).
Context: boot.
"""

import bootslot

bootslot.select()  # sys.path now starts at the chosen slot: hal and the rest come from it

import hal  # noqa: E402 - after the slot is chosen, on purpose

hal.safe_outputs()
