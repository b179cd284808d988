"""``v2g status`` and ``v2g repl``: look at a running board.

    v2g status --port P [--json] [--daemon-status FILE]
    v2g repl --port P

``status`` runs one snippet on the board (``SNIPPET``) that reads the running controller
(``_app``: ``main.py``'s global, which the board's REPL sees; else
``sys.modules['main']._app``) and prints one JSON object; the host prints it as text or
as JSON. Keys:

- ``state`` (supervisor state), ``reset_cause``, ``uptime_s`` (board clock);
- ``faults``: ``trip`` (latched fast trip ``{code, name, value_pu}`` or null),
  ``grid_integrity`` (fault 0x07 active), ``recent`` (last fault/trip/clear events);
- ``pll``: ``locked``, ``f_hz``, ``v_pos_pu``, ``theta_rad``;
- ``meas``: ``p_w``, ``q_var`` (measured, signs of docs/design.md section 7),
  ``v_d_pu``/``v_q_pu``,
  ``i_d_pu``/``i_q_pu``, ``v_dc_v``, ``p_cmd_w``/``q_cmd_var`` (supervisor commands),
  ``p_ref_w``/``q_ref_var`` (ramped references in the tick);
- ``contactor``: ``status`` (Modbus code, docs/formats.md section 8), ``name``, ``main``, ``pre``,
  ``aux``;
- ``tick``: ``count``, ``cost_us``, ``cost_max_us``, ``overruns``, ``errors``,
  ``period_us``, ``state``;
- ``link`` (null on a board without a link UART): ``state`` (DOWN, UP, DEGRADED, LOST),
  ``counters`` (the board's: ``rx_frames``, ``tx_frames``, ``crc_errors``, ``malformed``,
  ``unknown``, ``retransmissions``, ``duplicates``, ``out_of_order``, ``lost``,
  ``hb_gaps``), ``tx_dropped`` (frames the UART would not take), ``session`` (a session
  is on: the supervisor's gate);
- ``supervisor``: ``late_max_ms`` (most a supervisor step came later than one period
  after the one before, since boot or since a tool reset ``_app.sup_late_max_ms``);
- ``sim`` (simulated board only): the real-time pump's figures (``sim_board.stats``).
A board with no running controller (main.py stopped) answers ``{"running": false}``.

``--daemon-status FILE`` adds ``iso15118``: the ISO 15118 station's figures as the daemon
writes them (config ``station.status_path``): ``handshake_timeouts``, ``v2g_502``
(message loss above the threshold during a negotiation), ``messages``, ``messages_lost``,
``handshakes_refused``, ``sessions``, ``session`` (state of the current one), ``t``;
without ``--port`` only that part is printed.

``repl`` hands the terminal to ``mpremote connect P resume repl`` (Ctrl-] leaves).

Context: host only (the snippet runs on the board, in its REPL).
"""

import json
import subprocess
import sys

from v2g.board.console import BoardLink, check_port
from v2g.common.errors import UsageError

CONTACTOR_NAMES = {0: "STUCK", 1: "OPEN", 2: "CLOSED", 3: "PRECHARGING", 4: "OPENING"}

SNIPPET = r"""
import sys, json
def _status():
    a = globals().get('_app')
    if a is None:
        m = sys.modules.get('main')
        a = getattr(m, '_app', None) if m else None
    if a is None:
        return {'running': False}
    import pll, current, protect_fast, events, params, tick
    c = a.ctl
    s = a.supervisor
    h = a.hal
    held = a.held
    rated = held['p_rated_w']
    pl = c.pll
    cc = c.cc
    st = c.stats
    code, val = protect_fast.latched(c.prot)
    trip = None
    if code:
        trip = {'code': events.code_hex(code), 'name': events.fault_name(code),
                'value_pu': val / 4096}
    v_base_v = params.v_peak_mv(held) / 1000
    v_dc = ((c.raw[6] - c.cal[6]) * c.cal[13] >> 14) * v_base_v / 4096
    p_ref, q_ref = current.power_ref_q12(cc)
    recent = [list(e) for e in a.journal.items if e[1] in ('fault', 'trip', 'clear')][-8:]
    out = {
        'running': True,
        'state': s.state,
        'reset_cause': h.reset_cause(),
        'uptime_s': h.ticks_ms() / 1000,
        'faults': {'trip': trip, 'grid_integrity': bool(getattr(s, 'integrity_bad', False)),
                   'recent': recent},
        'pll': {'locked': pll.locked(pl), 'f_hz': pll.f_hz(pl),
                'v_pos_pu': pll.v_pos_pu(pl), 'theta_rad': pll.theta_rad(pl)},
        'meas': {'p_w': cc[current.P_MEAS] * rated / 4096,
                 'q_var': cc[current.Q_MEAS] * rated / 4096,
                 'v_d_pu': cc[current.V_D] / 4096, 'v_q_pu': cc[current.V_Q] / 4096,
                 'i_d_pu': cc[current.I_D] / 4096, 'i_q_pu': cc[current.I_Q] / 4096,
                 'v_dc_v': v_dc,
                 'p_cmd_w': s.p_cmd_w, 'q_cmd_var': s.q_cmd_var,
                 'p_ref_w': p_ref * rated / 4096, 'q_ref_var': q_ref * rated / 4096},
        'contactor': {'status': s.contactor_status() if hasattr(s, 'contactor_status')
                      else None,
                      'main': s.contactor_main, 'pre': s.contactor_pre,
                      'aux': h.contactor_aux()},
        'tick': {'count': st[tick.COUNT], 'cost_us': st[tick.COST_US],
                 'cost_max_us': st[tick.COST_MAX_US], 'overruns': st[tick.OVERRUNS],
                 'errors': st[tick.ERRORS], 'period_us': st[tick.PERIOD_US],
                 'state': st[tick.STATE]},
    }
    lk = getattr(a, 'link', None)
    out['link'] = None
    if lk is not None:
        from services import link as _l
        w = getattr(a, 'link_writer', None)
        out['link'] = {'state': _l.STATE_NAMES[lk.state], 'counters': lk.counters_dict(),
                       'tx_dropped': w.dropped if w else 0,
                       'session': bool(getattr(s, 'session_on', True))}
    out['supervisor'] = {'late_max_ms': getattr(a, 'sup_late_max_ms', None)}
    m = getattr(s, 'meter', None)
    out['energy'] = None
    if m is not None:
        out['energy'] = {'import_mwh': m.snapshot()['import'],
                         'export_mwh': m.snapshot()['export'], 'phases': ['a', 'b', 'c', 'total']}
        ej = getattr(a, 'energy_journal', None)
        if ej is not None:
            out['energy']['journal'] = ej.stats()
    sb = sys.modules.get('sim_board')
    if sb is not None:
        out['sim'] = dict(sb.stats)
    return out
print(json.dumps(_status()))
del _status
"""


def add_arguments(p):
    p.add_argument("--port", help="serial port of the board")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--daemon-status", metavar="FILE",
                   help="the daemon's ISO 15118 status file (config station.status_path)")


def add_repl_arguments(p):
    p.add_argument("--port", required=True, help="serial port of the board")


def read_status(port):
    """The board's status dict (see the module docstring)."""
    with BoardLink(port) as link:
        out = link.exec(SNIPPET, what="reading the controller's status")
    return json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])


def format_text(st):
    if not st.get("running"):
        return "no controller running on the board (main.py stopped); reset the board"
    f = st["faults"]
    trip = f["trip"]
    p, m, c, t = st["pll"], st["meas"], st["contactor"], st["tick"]
    lines = [
        "state       %s   (reset cause %s, up %.1f s)" % (st["state"], st["reset_cause"],
                                                         st["uptime_s"]),
        "faults      trip %s; grid integrity %s" % (
            "%s %s at %.3f pu" % (trip["code"], trip["name"], trip["value_pu"]) if trip
            else "none", "FAULT 0x07" if f["grid_integrity"] else "ok"),
        "pll         %s  f %.3f Hz  v_pos %.3f pu  theta %.3f rad" % (
            "LOCKED" if p["locked"] else "unlocked", p["f_hz"], p["v_pos_pu"], p["theta_rad"]),
        "power       P %.0f W  Q %.0f var  (command P %.0f W  Q %.0f var)" % (
            m["p_w"], m["q_var"], m["p_cmd_w"], m["q_cmd_var"]),
        "dq          v %.3f/%.3f pu  i %.3f/%.3f pu  v_dc %.1f V" % (
            m["v_d_pu"], m["v_q_pu"], m["i_d_pu"], m["i_q_pu"], m["v_dc_v"]),
        "contactor   %s (%s)  main %d pre %d aux %d" % (
            c["status"], CONTACTOR_NAMES.get(c["status"], "?"), c["main"], c["pre"], c["aux"]),
        "tick        %d ticks  cost %d us (max %d) of %d us  overruns %d  errors %d" % (
            t["count"], t["cost_us"], t["cost_max_us"], t["period_us"], t["overruns"],
            t["errors"]),
    ]
    lk = st.get("link")
    if lk:
        c = lk["counters"]
        lines.append("link        %s  frames rx %d tx %d  crc errors %d  malformed %d  "
                     "retransmissions %d  lost %d  heartbeat gaps %d%s" % (
                         lk["state"], c["rx_frames"], c["tx_frames"], c["crc_errors"],
                         c["malformed"], c["retransmissions"], c["lost"], c["hb_gaps"],
                         "" if lk.get("session", True) else "  (session stopped)"))
    for ev in f["recent"]:
        lines.append("event       t=%.3f s %s %s %s %s" % (ev[0] / 1000, *ev[1:]))
    if st.get("iso15118"):
        lines.append(format_iso15118(st["iso15118"]))
    if "sim" in st:
        s = st["sim"]
        lines.append("sim         %d ms simulated, %d ms slipped (stalls), largest pass %d ms"
                     % (s.get("sim_ms", 0), s.get("slipped_ms", 0), s.get("batch_max_ms", 0)))
    return "\n".join(lines)


def read_daemon_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError("--daemon-status %s: cannot read the daemon's status: %s"
                         % (path, e)) from None


def format_iso15118(d):
    return ("iso15118    sessions %d (%s)  handshake timeouts %d  V2G-502 %d  messages %d "
            "lost %d  handshakes refused %d" % (
                d.get("sessions", 0), d.get("session") or "idle",
                d.get("handshake_timeouts", 0), d.get("v2g_502", 0), d.get("messages", 0),
                d.get("messages_lost", 0), d.get("handshakes_refused", 0)))


def run(args):
    if not args.port and not args.daemon_status:
        raise UsageError("v2g status: give --port PORT (the board) and/or --daemon-status "
                         "FILE (the daemon's ISO 15118 figures)")
    st = read_status(args.port) if args.port else {}
    if args.daemon_status:
        st["iso15118"] = read_daemon_status(args.daemon_status)
    if args.json:
        print(json.dumps(st, sort_keys=True))
    elif args.port:
        print(format_text(st))
    else:
        print(format_iso15118(st["iso15118"]))
    return 0


def run_repl(args):
    check_port(args.port)
    if not sys.stdin.isatty():
        raise UsageError("v2g repl needs a terminal on stdin (it hands the terminal to "
                         "mpremote); for scripts use `mpremote connect %s resume exec ...` "
                         "or `v2g status --port %s`" % (args.port, args.port))
    cmd = [sys.executable, "-m", "mpremote", "connect", args.port, "resume", "repl"]
    return subprocess.call(cmd)
