"""The charger side of a session in one process: Josev's SECC with the product's EVSE
controller, the mapping, the firmware (stand-in or a ``LinkPeer``) and the OCPP client.

    python -m v2g.gateway.station --iface IF [--config FILE.json] [--sessions 1]

Prints one JSON object per event on stdout (``{"t": monotonic s, "event": ...}``): ready,
sdp (SDPRequest received), ev_limits, energy_start, energy (first power at the plant),
charge_loop (the EV's target), energy_stop, contactors_open, session_ended, and at the
end ``summary``. Logs go to stderr (and ``--log FILE``).

Config (JSON, every key optional; unknown keys refused by name): ``iso15118`` (keys of
``SeccSettings``), ``ocpp`` (keys of ``OcppSettings``), ``csms_setpoint_w`` (a setpoint
applied as if the CSMS had sent it, for runs without a CSMS), ``modem`` (keys of
``diagnostics.PlcModem``), ``protocols`` (Josev's PROTOCOLS), ``enforce_tls``.
Context: host (the daemon; its own process so one JVM serves it).
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import time

log = logging.getLogger("v2g.gateway.station")

CONFIG_KEYS = {"secc_cert", "contract_cert", "iso15118", "ocpp", "csms_setpoint_w", "modem",
               "protocols", "enforce_tls", "auth_modes", "grid_limit_w", "derate_pct"}


def load_config(path):
    cfg = {}
    if path:
        with open(path) as f:
            cfg = json.load(f)
    bad = sorted(set(cfg) - CONFIG_KEYS)
    if bad:
        raise ValueError("%s: unknown key(s) %s; allowed: %s"
                         % (path, ", ".join(bad), ", ".join(sorted(CONFIG_KEYS))))
    return cfg


class Events:
    """JSON lines on stdout, stamped with the monotonic clock."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.listeners = []

    def __call__(self, kind, **kw):
        rec = {"t": round(time.monotonic(), 4), "event": kind, **kw}
        self.out.write(json.dumps(rec, default=str) + "\n")
        self.out.flush()
        for fn in self.listeners:
            fn(kind, kw)


class _SdpLogTap(logging.Handler):
    """Josev logs "SDPRequest received" when the car's discovery arrives: an event."""

    def __init__(self, events):
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("SDPRequest received"):
            self.events("sdp")
        elif "Timeout" in msg or "timeout" in msg:
            self.events("iso_timeout", detail=msg[:200])


def check_certificates(cfg, ctl, ocpp=None, events=None):
    """An expired SECC or (pre-installed) contract certificate: ``REJECTED: Certificate
    Expired`` in the log, a SecurityEventNotification, and the controller refuses the
    authorization (no energy)."""
    from v2g.gateway import pki

    for key, what in (("secc_cert", "SECC"), ("contract_cert", "contract")):
        if cfg.get(key):
            text = pki.check_cert(cfg[key], what)
            if text:
                ctl.cert_rejection = text
                if ocpp is not None:
                    ocpp.certificate_failure(text)
                if events is not None:
                    events("certificate_rejected", reason=text)


async def run(args):
    from iso15118.secc import SECCHandler
    from iso15118.secc.controller.interface import ServiceStatus
    from iso15118.secc.secc_settings import Config
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec
    from iso15118.shared.settings import load_shared_settings
    from iso15118.shared.utils import load_requested_auth_modes, load_requested_protocols

    from v2g.gateway import diagnostics
    from v2g.gateway.firmware_model import FirmwareModel
    from v2g.gateway.iso15118_secc import ProductEVSEController, SeccSettings
    from v2g.gateway.session import SessionMapping

    setup_logging(args.log)  # after the iso15118 imports: they install their own config
    cfg = load_config(args.config)
    events = Events()
    settings = SeccSettings(**cfg.get("iso15118", {}))
    fw = FirmwareModel(rated_w=int(settings.rated_w)).start()
    fw.grid_limit_w = cfg.get("grid_limit_w")
    fw.derate_pct = cfg.get("derate_pct", 0)
    mapping = SessionMapping(fw, rated_w=settings.rated_w)
    mapping.start()
    ctl = ProductEVSEController(mapping, settings, events=events)
    modem = diagnostics.PlcModem(**cfg.get("modem", {}))

    ocpp = None
    if cfg.get("ocpp"):
        from v2g.gateway.ocpp_client import OcppSettings, StationOcpp
        ocpp = StationOcpp(OcppSettings(**cfg["ocpp"]), mapping, ctl, fw, events)
        await ocpp.start()
    check_certificates(cfg, ctl, ocpp, events)
    if cfg.get("csms_setpoint_w") is not None:
        mapping.update_csms(setpoint_w=cfg["csms_setpoint_w"])

    logging.getLogger("iso15118").addHandler(_SdpLogTap(events))
    os.environ.setdefault("MESSAGE_LOG_JSON", "False")
    load_shared_settings()
    config = Config()
    config.iface = args.iface
    config.log_level = "INFO"
    config.enforce_tls = bool(cfg.get("enforce_tls", False))
    config.free_charging_service = bool(settings.free_charging)
    config.supported_protocols = load_requested_protocols(
        cfg.get("protocols", ["ISO_15118_20_AC", "ISO_15118_20_DC"]))
    config.supported_auth_options = load_requested_auth_modes(cfg.get("auth_modes", ["EIM"]))
    config.standby_allowed = False
    config.allow_cert_install_service = False
    config.free_cert_install_service = False
    config.use_cpo_backend = False
    config.env_dump = {}

    ended = asyncio.Event()
    state = {"sessions": 0, "energy_t": None, "open_t": None}

    def on_event(kind, kw):
        if kind == "session_ended":
            state["sessions"] += 1
            if state["sessions"] >= args.sessions:
                ended.set()

    events.listeners.append(on_event)

    async def monitor():
        was = False
        while True:
            await asyncio.sleep(0.005)
            flowing = abs(fw.p_w) > 1.0
            if flowing and not was:
                events("energy", p_w=round(fw.p_w))
            was = flowing
            if not fw.active and fw.contactor == 1 and state["open_t"] is None \
                    and fw.applied and fw.applied[-1][0] == "session":
                state["open_t"] = time.monotonic()
                events("contactors_open")
            if fw.active:
                state["open_t"] = None

    async def drain_records():
        while True:
            rec = await fw.records.get()
            if ocpp is not None:
                ocpp.energy_record(rec)
            await fw.energy_ack(rec["record_no"])

    tasks = [asyncio.ensure_future(monitor()), asyncio.ensure_future(drain_records())]
    ok, why = modem.check_handshake()
    if not ok:
        log.error("REFUSED ISO 15118 handshake: %s", why)
        events("handshake_refused", reason=why)
        await asyncio.sleep(args.refused_wait_s)
        secc_task = None
    else:
        await ctl.set_status(ServiceStatus.STARTING)
        codec = ExificientEXICodec()  # one JVM per process, shared by every session
        handler = SECCHandler(exi_codec=codec, evse_controller=ctl, config=config)
        secc_task = asyncio.ensure_future(handler.start(args.iface))
        events("ready", pid=os.getpid())
        try:
            await asyncio.wait_for(ended.wait(), args.timeout_s)
        except asyncio.TimeoutError:
            log.error("no complete session within %.0f s", args.timeout_s)
        await asyncio.sleep(0.3)
    if ocpp is not None:
        await ocpp.stop()
    for t in tasks + ([secc_task] if secc_task else []):
        t.cancel()
    await mapping.stop()
    await fw.close()
    events("summary", ev_targets=ctl.ev_targets, modes=ctl.modes, sessions=state["sessions"],
           exported_mwh=round(fw.export_mwh, 1), imported_mwh=round(fw.import_mwh, 1),
           applied=[list(a) for a in fw.applied][-40:], refused=mapping.refused,
           modem=modem.counters())
    return 0 if state["sessions"] >= args.sessions else 1


def setup_logging(path=None):
    """Logs to stderr (and ``path``), stdout stays for the JSON events. Josev's import
    installs its own config (root handler on stdout, other loggers disabled): undone."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled = False
            if name.startswith("iso15118"):
                lg.handlers.clear()
                lg.propagate = True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m v2g.gateway.station")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--config")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--timeout-s", type=float, default=60.0)
    ap.add_argument("--refused-wait-s", type=float, default=3.0)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    try:
        return asyncio.run(run(args))
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
