"""Apply one scenario event (docs/formats.md section 1) to the simulated board: grid, environment
and fault keys go to the plant, commands to the supervisor, ``hang`` is returned for the
caller (the scenario runner or the real-time pump) to act on.

Context: simulation (scenario runner, board mode).
"""

PLANT_KEYS = ("v_pu", "f_hz", "rocof_hz_s", "until_hz", "phase_jump_deg", "harmonics",
              "neg_seq_pu", "noise_pu_rms", "island", "ambient_c", "fan_fail",
              "contactor_weld", "ntc_open")


def apply(ev, app, plant):
    """Apply ``ev``; returns the ``hang`` target it names, or None."""
    sup = app.supervisor
    now_ms = app.hal.ticks_ms()
    plant_part = {}
    for k in ev:
        if k in PLANT_KEYS:
            plant_part[k] = ev[k]
    if plant_part:
        plant.event(plant_part)
    if "setpoint" in ev:
        sp = ev["setpoint"]
        sup.command_setpoint(now_ms, sp["id"], sp.get("p_w", 0), sp.get("q_var", 0))
    if "permit_service" in ev:
        sup.permit_service(now_ms, ev["permit_service"])
    if "ev_limits" in ev:
        lim = ev["ev_limits"]
        sup.set_ev_limits(lim.get("max_charge_w"), lim.get("max_discharge_w"),
                          lim.get("soc_min"))
    if "session" in ev:
        # "stop" ceases power and opens the DC contactors, as a session end does
        sup.session(now_ms, ev["session"] == "start")
    return ev.get("hang")
