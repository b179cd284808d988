"""HAL of the simulated board: the firmware's hardware is a plant model.

Runs on the MicroPython unix runtime. The same HAL serves both sim modes:
- scenario mode: the scenario runner owns time; it calls the tick handler, advances the
  plant and steps the supervisor in simulated time (setting ``SimHal.t_us``);
- board mode (``v2g sim board``): ``extra_tasks()`` adds an asyncio pump that runs the
  tick and the plant in real time, in batches every millisecond, plus the REPL task
  that ``mpremote`` talks to.

Clock: ``ticks_us``/``ticks_ms`` are simulated time in both modes (board mode keeps it
locked to the wall clock), so the tick cost reads 0 here: the bench measures it instead.
Context: boot (build) and tick (adc_read, pwm_set, pwm_off, ticks_us, ticks_diff).
"""

from array import array

import micropython
from micropython import const

import plant as plant_model

# io words (SimHal.io): the PWM state the tick writes and the plant reads, and the clock.
# The duties sit at svpwm.DUTY_A..C (2, 3, 4), so io is the plant's ``pw`` argument.
IO_PWM_ON = const(0)
IO_T_US = const(1)  # simulated time, us, masked like time.ticks_us
_IO_DUTY_A = const(2)
_IO_DUTY_B = const(3)
_IO_DUTY_C = const(4)
_IO_WORDS = const(5)

_PERIOD = const(0x40000000)  # ticks_* wrap like MicroPython's time.ticks_*
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)

_active = None  # the HAL of the running board (scenario runner, REPL helpers)
PLANT = None  # a plant the scenario runner made; build() uses it instead of a new one
CAUSE = None  # reset cause the scenario runner sets before a (re)boot


def safe_outputs():
    """Gates off, contactors open; works before build()."""
    if _active is not None:
        _active.pwm_off()
        _active.contactor(0, 0)


def build(board, plant=None):
    global _active
    import os

    _active = SimHal(board, plant)
    # board mode: the wrapper that restarted us says why (power, soft, wdt)
    _active.cause = CAUSE or os.getenv("V2G_RESET_CAUSE") or "power"
    return _active


def extra_tasks():
    import sim_board

    return sim_board.tasks(_active)


class SimHal:
    io_pwm_on = IO_PWM_ON  # io[] index of the gate-enable flag (the board-mode pump reads it)

    def __init__(self, board, plant=None):
        self.board = board
        plant = plant or PLANT
        if plant is None:
            spec = dict(board.get("plant", {}))
            plant = plant_model.Plant(tick_hz=board["tick_hz"],
                                      pwm_period_counts=board["pwm_period_counts"],
                                      pwm_freq_hz=board["pwm_freq_hz"],
                                      dead_time_ns=board["dead_time_ns"], **spec)
        self.plant = plant
        self.io = array("i", bytes(4 * _IO_WORDS))
        self._t_us = 0
        self.tick_fn = None
        self.wdt_timeout_ms = 0
        self.wdt_last_ms = 0
        self.cause = "power"
        # tick context: bound once, no allocation per call
        self.adc_read = plant.sample

    # ---- simulated time (the runner or the board pump sets it) ----
    @property
    def t_us(self):
        return self._t_us

    @t_us.setter
    def t_us(self, t):
        self._t_us = t
        self.io[IO_T_US] = t & _MASK

    @property
    def pwm_on(self):
        return self.io[IO_PWM_ON]

    # ---- tick context: viper, like a board's native PWM and timer drivers ----
    @micropython.viper
    def pwm_set(self, pw: ptr32):  # noqa: F821 (viper type)
        io = ptr32(self.io)  # noqa: F821 (viper cast)
        io[_IO_DUTY_A] = pw[2]  # svpwm.DUTY_A
        io[_IO_DUTY_B] = pw[3]
        io[_IO_DUTY_C] = pw[4]
        io[IO_PWM_ON] = 1

    @micropython.viper
    def pwm_off(self):
        io = ptr32(self.io)  # noqa: F821 (viper cast)
        io[IO_PWM_ON] = 0

    @micropython.viper
    def ticks_us(self) -> int:
        io = ptr32(self.io)  # noqa: F821 (viper cast)
        return io[IO_T_US]

    def ticks_diff(self, a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    # ---- boot / supervisor context ----
    def ticks_ms(self):
        return (self.t_us // 1000) & _MASK

    def start_tick(self, fn):
        self.tick_fn = fn

    def stop_tick(self):
        self.tick_fn = None

    def contactor(self, main_on, pre_on):
        self.plant.contactor_cmd(main_on, pre_on)

    def contactor_aux(self):
        return self.plant.contactor_aux()

    def ntc_raw(self):
        return self.plant.ntc_raw()

    def fan(self, duty_pct):
        self.plant.fan(duty_pct)

    def fan_tach_hz(self):
        return self.plant.fan_tach_hz()

    def wdt_start(self, timeout_ms):
        self.wdt_timeout_ms = timeout_ms
        self.wdt_last_ms = self.t_us // 1000

    def wdt_feed(self):
        self.wdt_last_ms = self.t_us // 1000

    def wdt_expired(self):
        """True when the watchdog would have reset the board by now."""
        return (self.wdt_timeout_ms > 0
                and self.t_us // 1000 - self.wdt_last_ms > self.wdt_timeout_ms)

    def reset_cause(self):
        return self.cause

    def link_stream(self):
        """The link UART: in board mode the master side of the pty ``v2g sim board``
        prints as ``link:``, inherited as descriptor ``V2G_LINK_FD`` (non-blocking; the
        link service polls it through asyncio). None elsewhere (scenario mode: no link)."""
        import os

        fd = os.getenv("V2G_LINK_FD")
        if not fd:
            return None
        return open(int(fd), "r+b")

