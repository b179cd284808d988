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
``diagnostics.PlcModem``), ``protocols`` (Josev's PROTOCOLS), ``enforce_tls`` (refuse a
car that does not ask for TLS), ``tls_1_3`` (TLS 1.3 with mutual authentication: the car's
OEM provisioning certificate is verified against the OEM root), ``pki_path`` (the
certificates and keys in the ``iso15118`` package's layout, ``pki.make_iso15118_pki``;
its SECC leaf is checked for expiry like ``secc_cert``).
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
               "protocols", "enforce_tls", "auth_modes", "grid_limit_w", "derate_pct",
               "message_loss", "tls_1_3", "pki_path"}


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


def check_config(cfg):
    """Every section's keys and values (``ValueError`` naming the key), without starting
    anything (the daemon checks its station config before it serves)."""
    from v2g.gateway import diagnostics
    from v2g.gateway.iso15118_secc import SeccSettings
    from v2g.gateway.ocpp_client import OcppSettings

    SeccSettings(**cfg.get("iso15118", {}))
    if cfg.get("ocpp"):
        OcppSettings(**cfg["ocpp"])
    try:
        diagnostics.PlcModem(**cfg.get("modem", {}))
    except TypeError as e:
        raise ValueError("modem config: %s (allowed: %s)"
                         % (e, ", ".join(diagnostics.PlcModem.KEYS))) from None
    bad = sorted(set(cfg.get("message_loss", {})) - {"threshold_pct", "min_messages"})
    if bad:
        raise ValueError("message_loss config: unknown key(s) %s; allowed: min_messages, "
                         "threshold_pct" % ", ".join(bad))


JVM_OPTIONS = "-Xmx96m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
# an ISO 15118-20 SessionSetupReq as Josev's car sends it (EXI)
_WARM_EXI = "808c0400000000000000000bd8accd80620b2ba6a4ab1899199a1a9b1b9c1c9820a121a222ac00"


def warm_up_codec(codec):
    """Decode and encode one message before the SECC listens: the JVM's first EXI calls
    are slow (class loading, JIT: seconds on a busy machine), and the car's first answer
    (SessionSetupRes) must come within its 2 s timeout."""
    from iso15118.shared.messages.enums import Namespace

    try:
        text = codec.decode(bytes.fromhex(_WARM_EXI), Namespace.ISO_V20_COMMON_MSG)
        codec.encode(text, Namespace.ISO_V20_COMMON_MSG)
    except Exception as e:  # noqa: BLE001 - a warm-up only
        log.warning("EXI codec warm-up failed: %s", e)


class Events:
    """JSON lines on stdout, stamped with the monotonic clock."""

    def __init__(self, out=None):
        self.out = out  # None: sys.stdout at the time of each event
        self.listeners = []

    def __call__(self, kind, **kw):
        rec = {"t": round(time.monotonic(), 4), "event": kind, **kw}
        out = self.out or sys.stdout
        out.write(json.dumps(rec, default=str) + "\n")
        out.flush()
        for fn in self.listeners:
            fn(kind, kw)


class _SdpLogTap(logging.Handler):
    """Josev logs "SDPRequest received" when the car's discovery arrives, and
    "TimeoutError occurred. Waited for N s ..." when a message timed out: events."""

    def __init__(self, events):
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("SDPRequest received"):
            self.events("sdp")
        elif "TimeoutError occurred" in msg:
            # comm_session's message timeout (a message the peer never answered); logged
            # more than once per timeout: the station counts one per session
            self.events("iso_timeout", detail=msg[:200])


def tap_connections(events):
    """Every car connection to the SECC as an event: ``tls`` (protocol version, cipher and
    the car's verified certificate subject, None without mutual authentication) or
    ``tcp_plain``. Josev's TCP server has no hook for it: its connection callback is
    wrapped once per process and reports to the newest ``events``."""
    from iso15118.secc.transport.tcp_server import TCPServer

    TCPServer._v2g_events = events
    if getattr(TCPServer.__call__, "_v2g_tap", False):
        return
    accept = TCPServer.__call__

    async def call(self, reader, writer):
        ssl_obj = writer.get_extra_info("ssl_object")
        if ssl_obj is None:
            TCPServer._v2g_events("tcp_plain")
        else:
            peer = ssl_obj.getpeercert() or {}
            cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn
                       if k == "commonName"), None)
            TCPServer._v2g_events("tls", version=ssl_obj.version(),
                                  cipher=ssl_obj.cipher()[0], peer=cn)
        await accept(self, reader, writer)
    call._v2g_tap = True
    TCPServer.__call__ = call


def check_certificates(cfg, ctl, ocpp=None, events=None):
    """An expired SECC or (pre-installed) contract certificate: ``REJECTED: Certificate
    Expired`` in the log, a SecurityEventNotification, and the controller refuses the
    authorization (no energy)."""
    from v2g.gateway import pki

    paths = [(cfg.get("secc_cert"), "SECC"), (cfg.get("contract_cert"), "contract")]
    if cfg.get("pki_path") and not cfg.get("secc_cert"):
        paths[0] = (os.path.join(cfg["pki_path"], "iso15118_2", "certs", "seccLeafCert.pem"),
                    "SECC")
    for path, what in paths:
        if path:
            text = pki.check_cert(path, what)
            if text:
                ctl.cert_rejection = text
                if ocpp is not None:
                    ocpp.certificate_failure(text)
                if events is not None:
                    events("certificate_rejected", reason=text)


class LinkFirmware:
    """The daemon's ``LinkPeer`` as the station's firmware. The daemon may reopen the
    device (a new peer): every call asks ``get_peer`` for the current one. A command
    while the link is not UP raises ``ConnectionError`` (the mapping sends it again); the
    register image reads as none while the link is not UP (no stale contactor state)."""

    def __init__(self, get_peer):
        self.get_peer = get_peer
        self.records = asyncio.Queue()  # this firmware sends no energy records (v1)

    def _peer(self):
        peer = self.get_peer()
        if peer is None or peer.state != "UP":
            raise ConnectionError("link to the firmware is not up")
        return peer

    @property
    def image(self):
        peer = self.get_peer()
        return peer.image if peer is not None and peer.state == "UP" else None

    @property
    def images(self):
        peer = self.get_peer()
        return (id(peer), peer.images) if peer is not None else None

    async def setpoint(self, setpoint_id, p_w, q_var, timeout=5.0):
        return await self._peer().setpoint(setpoint_id, p_w, q_var, timeout=timeout)

    async def ev_limits(self, max_charge_w, max_discharge_w, soc_min_permille, timeout=5.0):
        return await self._peer().ev_limits(max_charge_w, max_discharge_w, soc_min_permille,
                                            timeout=timeout)

    async def ev_soc(self, soc_pm, timeout=5.0):
        return await self._peer().ev_soc(soc_pm, timeout=timeout)

    async def session(self, start, session_id=0, timeout=5.0):
        return await self._peer().session(start, session_id, timeout=timeout)

    async def energy_ack(self, record_no, timeout=5.0):
        return await self._peer().energy_ack(record_no, timeout=timeout)


class Station:
    """SECC + mapping + OCPP client over one firmware object (``FirmwareModel`` in unit
    tests, ``LinkFirmware`` in the daemon). ``start`` returns once the SECC listens for
    SDP (or the handshake was refused); ``link_up`` is called by the daemon at every new
    link session: with no ISO 15118 session open the firmware is told SESSION stop (no
    car, no energy: the contactors stay open)."""

    def __init__(self, cfg, firmware, iface, events=None, status_path=None):
        from v2g.gateway import diagnostics
        from v2g.gateway.iso15118_secc import ProductEVSEController, SeccSettings
        from v2g.gateway.meter import Meter
        from v2g.gateway.session import SessionMapping

        self.cfg = cfg
        self.fw = firmware
        self.iface = iface
        self.events = events or Events()
        self.status_path = status_path
        self.settings = SeccSettings(**cfg.get("iso15118", {}))
        self.mapping = SessionMapping(firmware, rated_w=self.settings.rated_w)
        self.ctl = ProductEVSEController(self.mapping, self.settings, events=self.events)
        self.ctl.on_message = self._on_message
        self.modem = diagnostics.PlcModem(**cfg.get("modem", {}))
        self.loss_cfg = dict(cfg.get("message_loss", {}))
        bad = sorted(set(self.loss_cfg) - {"threshold_pct", "min_messages"})
        if bad:
            raise ValueError("message_loss config: unknown key(s) %s; allowed: "
                             "min_messages, threshold_pct" % ", ".join(bad))
        self.loss = diagnostics.MessageLoss(**self.loss_cfg)
        self.meter = Meter()  # the station's lifetime (summary)
        self.ocpp = None
        self.figures = {"sessions": 0, "handshake_timeouts": 0, "v2g_502": 0, "messages": 0,
                        "messages_lost": 0, "handshakes_refused": 0, "session": None}
        self.in_negotiation = False
        self.timeout_seen = False
        self.state = {"energy_t": None, "open_t": None, "ended": False}
        self.tasks = []
        self.secc_task = None
        self.refused = None
        self.events.listeners.append(self._on_event)

    # ---- diagnostics (fed from the SECC) ----

    def _on_event(self, kind, kw):
        f = self.figures
        if kind == "sdp":
            self.in_negotiation, self.timeout_seen = True, False
            f["session"] = "negotiating"
        elif kind == "charge_loop" and self.in_negotiation:
            self.in_negotiation = False
            f["session"] = "charging"
        elif kind == "iso_timeout":
            self.on_timeout(kw.get("detail", ""))
        elif kind == "session_ended":
            f["sessions"] += 1
            f["session"] = None
            self.in_negotiation = False
        else:
            return
        self.write_status()

    def _on_message(self, state):
        self.figures["messages"] += 1
        if self.in_negotiation:
            self._loss(False)

    def _loss(self, lost):
        if self.loss.message(lost) is None:
            return
        from v2g.gateway import diagnostics

        self.figures["v2g_502"] += 1
        self.events("fault", code=diagnostics.V2G_502, lost=self.loss.lost,
                    messages=self.loss.sent)
        if self.ocpp is not None:
            self.ocpp.diagnostic("MessageLossFault", "%s %d/%d" % (
                diagnostics.V2G_502, self.loss.lost, self.loss.sent), alerting=True)
        self.loss = diagnostics.MessageLoss(**self.loss_cfg)  # a new window

    def on_timeout(self, detail):
        """A message timeout of the SECC (Josev's "TimeoutError occurred. Waited ..."):
        during the negotiation (before the first charge loop) a handshake timeout, and a
        lost message either way (``V2G-502`` above the threshold). One per session."""
        if self.timeout_seen:
            return
        self.timeout_seen = True
        self.figures["messages_lost"] += 1
        if self.in_negotiation:
            self.modem.handshake_timeout(detail[:120])
            self.figures["handshake_timeouts"] = self.modem.handshake_timeouts
            if self.ocpp is not None:
                self.ocpp.diagnostic("HandshakeTimeouts", self.modem.handshake_timeouts)
            self._loss(True)
        self.write_status()

    def write_status(self):
        if not self.status_path:
            return
        d = dict(self.figures, t=round(time.time(), 3), pid=os.getpid(),
                 modem=self.modem.counters())
        tmp = "%s.tmp" % self.status_path
        try:
            with open(tmp, "w") as f:
                json.dump(d, f)
            os.replace(tmp, self.status_path)
        except OSError as e:
            log.warning("cannot write %s: %s", self.status_path, e)

    # ---- firmware side ----

    def link_up(self):
        """A new link session: no ISO 15118 session open -> SESSION stop (idle)."""
        if not self.mapping.session_open:
            asyncio.ensure_future(self.mapping._command("session", False, 0))

    def _on_image(self, img, now=None):
        """Every register image (the meters must see each one: images that arrive in a
        burst after the event loop was busy each carry their own board time)."""
        self.meter.feed(img, now)
        if self.ocpp is not None and self.ocpp.meter is not None:
            self.ocpp.meter.feed(img, now)

    async def _monitor(self):
        fw, st = self.fw, self.state
        was, loop = False, asyncio.get_running_loop()
        peer = None
        get_peer = getattr(fw, "get_peer", None)
        while True:
            await asyncio.sleep(0.005)
            if get_peer is not None:  # the link: a listener on the current LinkPeer
                cur = get_peer()
                if cur is not None and cur is not peer:
                    peer = cur
                    peer.image_listeners.append(self._on_image)
            img = fw.image
            if not img:
                continue
            if get_peer is None:  # the stand-in: polled
                self._on_image(img, loop.time())
            p = float(img.get("p_cmd_w", 0))
            flowing = abs(p) > 1.0 and img.get("contactor_status") == 2
            if flowing and not was:
                self.events("energy", p_w=round(p))
            was = flowing
            if self.mapping.session_open:
                st["ended"], st["open_t"] = True, None
            elif st["ended"] and img.get("contactor_status") == 1 and st["open_t"] is None:
                st["open_t"] = time.monotonic()
                self.events("contactors_open")

    async def _drain_records(self):
        while True:
            rec = await self.fw.records.get()
            if self.ocpp is not None:
                self.ocpp.energy_record(rec)
            await self.fw.energy_ack(rec["record_no"])

    # ---- lifecycle ----

    async def start(self, refused_wait_s=0.0):
        from iso15118.secc import SECCHandler
        from iso15118.secc.controller.interface import ServiceStatus
        from iso15118.secc.secc_settings import Config
        from iso15118.shared.exificient_exi_codec import ExificientEXICodec
        from iso15118.shared.settings import load_shared_settings
        from iso15118.shared.utils import load_requested_auth_modes, load_requested_protocols

        cfg = self.cfg
        self.mapping.start()
        if cfg.get("ocpp"):
            from v2g.gateway.meter import Meter
            from v2g.gateway.ocpp_client import OcppSettings, StationOcpp
            self.ocpp = StationOcpp(OcppSettings(**cfg["ocpp"]), self.mapping, self.ctl,
                                    self.fw, self.events)
            if isinstance(self.fw, LinkFirmware):
                self.ocpp.meter = Meter()  # the firmware's counters (no energy records)
            await self.ocpp.start()
        check_certificates(cfg, self.ctl, self.ocpp, self.events)
        if cfg.get("csms_setpoint_w") is not None:
            self.mapping.update_csms(setpoint_w=cfg["csms_setpoint_w"])
        logging.getLogger("iso15118").addHandler(_SdpLogTap(self.events))
        tap_connections(self.events)
        os.environ.setdefault("MESSAGE_LOG_JSON", "False")
        if cfg.get("pki_path"):
            os.environ["PKI_PATH"] = os.path.join(os.path.abspath(cfg["pki_path"]), "")
        if "tls_1_3" in cfg:
            os.environ["ENABLE_TLS_1_3"] = "True" if cfg["tls_1_3"] else "False"
        load_shared_settings()
        config = Config()
        config.iface = self.iface
        config.log_level = "INFO"
        config.enforce_tls = bool(cfg.get("enforce_tls", False))
        config.free_charging_service = bool(self.settings.free_charging)
        config.supported_protocols = load_requested_protocols(
            cfg.get("protocols", ["ISO_15118_20_AC", "ISO_15118_20_DC"]))
        config.supported_auth_options = load_requested_auth_modes(
            cfg.get("auth_modes", ["EIM"]))
        config.standby_allowed = False
        config.allow_cert_install_service = False
        config.free_cert_install_service = False
        config.use_cpo_backend = False
        config.env_dump = {}
        self.tasks = [asyncio.ensure_future(self._monitor()),
                      asyncio.ensure_future(self._drain_records())]
        ok, why = self.modem.check_handshake()
        if not ok:
            log.error("REFUSED ISO 15118 handshake: %s", why)
            self.figures["handshakes_refused"] = self.modem.refused
            self.events("handshake_refused", reason=why)
            self.refused = why
            self.write_status()
            return
        await self.ctl.set_status(ServiceStatus.STARTING)
        # the EXI codec's JVM: a bounded heap and the serial collector (a 2-core controller;
        # the default heap grows towards a quarter of RAM), C1 only (warm in ~1 s);
        # JAVA_TOOL_OPTIONS set by the operator wins
        os.environ.setdefault("JAVA_TOOL_OPTIONS", JVM_OPTIONS)
        codec = ExificientEXICodec()  # one JVM per process, shared by every session
        await asyncio.get_running_loop().run_in_executor(None, warm_up_codec, codec)
        handler = SECCHandler(exi_codec=codec, evse_controller=self.ctl, config=config)
        self.secc_task = asyncio.ensure_future(handler.start(self.iface))
        self.write_status()
        self.events("ready", pid=os.getpid())

    async def stop(self):
        """Daemon stop: an open session is ended through the firmware first."""
        if self.mapping.session_open:
            try:
                await asyncio.wait_for(self.mapping.end("daemon stop"), 3.0)
            except asyncio.TimeoutError:
                log.warning("daemon stop: SESSION stop not confirmed by the firmware")
        if self.ocpp is not None:
            await self.ocpp.stop()
        for t in self.tasks + ([self.secc_task] if self.secc_task else []):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.mapping.stop()

    def summary(self):
        fw, m = self.fw, self.meter
        imp, exp = m.energy_mwh()
        if hasattr(fw, "export_mwh"):  # the stand-in integrates its plant power exactly
            imp, exp = fw.import_mwh, fw.export_mwh
        applied = getattr(fw, "applied", None)
        if applied is None:
            applied = [(k, *[int(a) if isinstance(a, bool) else a for a in args])
                       for k, args in self.mapping.commands]
        return dict(ev_targets=self.ctl.ev_targets, modes=self.ctl.modes,
                    sessions=self.figures["sessions"], exported_mwh=round(exp, 1),
                    imported_mwh=round(imp, 1), applied=[list(a) for a in applied][-40:],
                    refused=self.mapping.refused, modem=self.modem.counters(),
                    diagnostics=dict(self.figures))


async def run(args):
    from v2g.gateway.firmware_model import FirmwareModel

    setup_logging(args.log)
    cfg = load_config(args.config)
    settings_rated = cfg.get("iso15118", {}).get("rated_w", 11000)
    fw = FirmwareModel(rated_w=int(settings_rated)).start()
    fw.grid_limit_w = cfg.get("grid_limit_w")
    fw.derate_pct = cfg.get("derate_pct", 0)
    events = Events()
    station = Station(cfg, fw, args.iface, events)
    setup_logging(args.log)  # after the iso15118 imports: they install their own config
    ended = asyncio.Event()

    def on_event(kind, kw):
        if kind == "session_ended" and station.figures["sessions"] >= args.sessions:
            ended.set()

    events.listeners.append(on_event)
    await station.start()
    if station.refused:
        await asyncio.sleep(args.refused_wait_s)
    else:
        try:
            await asyncio.wait_for(ended.wait(), args.timeout_s)
        except asyncio.TimeoutError:
            log.error("no complete session within %.0f s", args.timeout_s)
        await asyncio.sleep(0.3)
    await station.stop()
    await fw.close()
    events("summary", **station.summary())
    return 0 if station.figures["sessions"] >= args.sessions else 1


def setup_logging(path=None):
    """Logs to stderr (and ``path``), stdout stays for the JSON events. Josev's import
    installs its own config (root handler on stdout, other loggers disabled): undone."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    josev_logs_to_root()


def josev_logs_to_root():
    """Josev's loggers: enabled, their own handlers (stdout) removed, into the root's."""
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
