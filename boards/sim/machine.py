"""``machine`` on the simulated board: the unix runtime's own module plus ``reset()``,
which restarts the virtual board the way a hardware reset restarts a real one (outputs
safe first; ``v2g sim board`` starts main.py again on the same flash).
Context: simulated board only.
"""

from umachine import *  # noqa: F403 - extend the built-in module, as ports do


def reset():
    import sim_board

    sim_board.reset()
