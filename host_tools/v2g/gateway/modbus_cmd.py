"""``v2g modbus``: a Modbus TCP client for the daemon (pymodbus; SunSpec via pysunspec2).

- ``v2g modbus read ADDR [COUNT] --host H --port P [--json]``: holding registers at
  protocol address ADDR (0 = register 40001, the DC-contactor status); ``--json`` prints
  ``{"address": ADDR, "values": [...]}``;
- ``v2g modbus write ADDR VALUE [VALUE ...] [--token T]``: one write (function 6 for one
  value, 16 for more) on one connection, after writing the unlock token when given;
- ``v2g modbus scan``: pysunspec2 discovers the SunSpec device and prints every model with
  its points, scaled values and units (``--json``: {model id: {point: value}});
- ``v2g modbus map``: the register map as Markdown (no connection; from ``regmap``).

Exit: 0 done, 1 the server refused or did not answer (exception code printed), 2 bad input.
Context: host.
"""

import json
import sys

from v2g.common.errors import ToolError, UsageError


def add_arguments(p):
    sub = p.add_subparsers(dest="modbus_cmd", metavar="ACTION")
    for name, help_text in (("read", "read holding registers"),
                            ("write", "write holding registers"),
                            ("scan", "discover and print the SunSpec models"),
                            ("map", "print the register map as Markdown")):
        s = sub.add_parser(name, help=help_text, description=help_text)
        if name == "read":
            s.add_argument("address", type=int, help="protocol address (0 = 40001)")
            s.add_argument("count", type=int, nargs="?", default=1, help="registers, 1..125")
        elif name == "write":
            s.add_argument("address", type=int, help="protocol address")
            s.add_argument("values", type=int, nargs="+", help="register values, 0..65535")
            s.add_argument("--token", help="unlock token, written first on this connection")
        if name != "map":
            s.add_argument("--host", default="127.0.0.1")
            s.add_argument("--port", type=int, default=1502)
            s.add_argument("--unit", type=int, default=1, help="unit (device) id")
            s.add_argument("--timeout", type=float, default=3.0, help="seconds")
        s.add_argument("--json", action="store_true", help="one JSON object on stdout")


def run(args):
    cmd = getattr(args, "modbus_cmd", None)
    if cmd is None:
        raise UsageError("give an action: read, write, scan or map")
    if cmd == "map":
        from v2g.gateway import regmap

        print(regmap.markdown())
        return 0
    if not 1 <= args.port <= 65535:
        raise UsageError("--port %d: outside 1..65535" % args.port)
    return {"read": _read, "write": _write, "scan": _scan}[cmd](args)


def _client(args):
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient(args.host, port=args.port, timeout=args.timeout, retries=0)
    if not c.connect():
        raise ToolError("cannot connect to %s:%d" % (args.host, args.port))
    return c


def _check(rr, what):
    from pymodbus.exceptions import ModbusException

    if isinstance(rr, ModbusException):
        raise ToolError("%s: %s" % (what, rr))
    if rr.isError():
        code = getattr(rr, "exception_code", None)
        print("%s: exception %s" % (what, "%02d" % code if code is not None else rr),
              file=sys.stderr)
        return False
    return True


def _read(args):
    if not 0 <= args.address <= 65535:
        raise UsageError("ADDR %d: outside 0..65535" % args.address)
    if not 1 <= args.count <= 125:
        raise UsageError("COUNT %d: outside 1..125" % args.count)
    c = _client(args)
    try:
        rr = c.read_holding_registers(args.address, count=args.count, device_id=args.unit)
        if not _check(rr, "read %d+%d" % (args.address, args.count)):
            return 1
    finally:
        c.close()
    if args.json:
        print(json.dumps({"address": args.address, "values": rr.registers}))
    else:
        for i, v in enumerate(rr.registers):
            print("%5d  %5d  0x%04x" % (args.address + i, v, v))
    return 0


def _write(args):
    if not 0 <= args.address <= 65535:
        raise UsageError("ADDR %d: outside 0..65535" % args.address)
    bad = [v for v in args.values if not 0 <= v <= 65535]
    if bad:
        raise UsageError("VALUE %d: outside 0..65535 (a register is 16 bits)" % bad[0])
    c = _client(args)
    try:
        if args.token is not None:
            from v2g.gateway.regmap import UNLOCK_ADDR, UNLOCK_REGS

            b = args.token.encode()
            if len(b) > 2 * UNLOCK_REGS:
                raise UsageError("--token: longer than %d bytes" % (2 * UNLOCK_REGS))
            b = b.ljust(2 * UNLOCK_REGS, b"\0")
            words = [(b[i] << 8) | b[i + 1] for i in range(0, len(b), 2)]
            if not _check(c.write_registers(UNLOCK_ADDR, words, device_id=args.unit),
                          "unlock"):
                return 1
        if len(args.values) == 1:
            rr = c.write_register(args.address, args.values[0], device_id=args.unit)
        else:
            rr = c.write_registers(args.address, args.values, device_id=args.unit)
        if not _check(rr, "write %d" % args.address):
            return 1
    finally:
        c.close()
    if args.json:
        print(json.dumps({"address": args.address, "values": args.values, "ok": True}))
    else:
        print("ok")
    return 0


def scan(host, port, unit=1, timeout=3.0):
    """pysunspec2 scan -> [(model id, label, [(point path, value, units)])] (values
    scaled by their scale factors; None where the device says "not implemented")."""
    import sunspec2.modbus.client as sclient

    dev = sclient.SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr=host, ipport=port,
                                               timeout=timeout)
    try:
        dev.scan()
    except Exception as e:  # noqa: BLE001 (pysunspec2 raises several kinds)
        raise ToolError("SunSpec scan of %s:%d failed: %s" % (host, port, e)) from None
    finally:
        dev.close()
    out = []
    for mid in sorted(m for m in dev.models if isinstance(m, int)):
        for model in dev.models[mid]:
            pts = []
            _points(model, "", pts)
            label = model.model_def["group"].get("label", "") if model.model_def else ""
            out.append((mid, label, pts))
    return out


def _points(group, prefix, out):
    for name, p in group.points.items():
        v = p.cvalue if p.value is not None else None
        out.append((prefix + name, v, p.pdef.get("units", "")))
    for name, g in group.groups.items():
        if isinstance(g, list):
            for i, gi in enumerate(g):
                _points(gi, "%s%s[%d]." % (prefix, name, i), out)
        else:
            _points(g, "%s%s." % (prefix, name), out)


def _scan(args):
    models = scan(args.host, args.port, args.unit, args.timeout)
    if args.json:
        print(json.dumps({str(mid): {n: v for n, v, _ in pts} for mid, _, pts in models},
                         default=str))
        return 0
    for mid, label, pts in models:
        print("model %d %s (%d points)" % (mid, label, len(pts)))
        for name, v, units in pts:
            shown = "n/i" if v is None else ("%.6g" % v if isinstance(v, float) else v)
            print("  %-28s %s %s" % (name, shown, units))
    return 0
