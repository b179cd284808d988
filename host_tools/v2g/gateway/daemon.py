"""``v2g daemon``: the communication controller's process (``v2g-daemon``).

``v2g daemon [--config /etc/v2g/config.yaml]`` validates the config (exit 2 naming key and
value when it is bad), opens the link device (pyserial; the simulated board's
``link: /dev/pts/M`` works), runs the version handshake (again with a fresh nonce whenever
the link is lost, so a restarted board or daemon resynchronises), and serves Modbus TCP
from the mirrored register image (``server``). It prints one line when it serves::

    v2g daemon: serving Modbus TCP on 127.0.0.1:1502, link /dev/pts/5

With a ``station`` section in the config the daemon also runs the ISO 15118-20 SECC
(Josev, one JVM) and the OCPP client (``station.Station``) over its own link session: one
owner of the link. The station's events are JSON lines on stdout (``{"t", "event", ...}``:
ready, sdp, ev_limits, energy_start, energy, charge_loop, energy_stop, contactors_open,
session_ended, fault, ...); its figures go to ``station.status_path`` for
``v2g status --daemon-status``. At every new link session with no ISO 15118 session open
the firmware is told SESSION stop: without a car the contactors stay open.

Signals: SIGTERM or SIGINT stop it cleanly (server closed, link closed, exit 0); SIGHUP
reloads the config: a bad file is logged and the last good config stays; write
permissions, ``stale_s`` and the log level change at once, the link device and the Modbus
address need a restart (logged).

``v2g daemon install-unit [--dest DIR]`` writes the systemd unit ``v2g-daemon.service``
(default ``/etc/systemd/system``).

Context: host (the communication controller).
"""

import asyncio
import logging
import os
import signal
import sys
from importlib import resources
from pathlib import Path

from v2g.common.errors import ToolError, UsageError
from v2g.gateway import config as config_mod

log = logging.getLogger("v2g.gateway")
DEFAULT_CONFIG = "/etc/v2g/config.yaml"
UNIT_NAME = "v2g-daemon.service"


def add_arguments(p):
    p.add_argument("action", nargs="?", choices=("run", "install-unit", "check-tls"),
                   default="run", help="run the daemon (default), install its systemd unit, "
                   "or check-tls: the TLS 1.3 handshake to the billing broker")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="YAML config (default %s)" % DEFAULT_CONFIG)
    p.add_argument("--dest", default="/etc/systemd/system",
                   help="install-unit: folder to write %s into" % UNIT_NAME)


def unit_text():
    return resources.files("v2g.gateway").joinpath(UNIT_NAME).read_text()


def install_unit(dest):
    d = Path(dest)
    if not d.is_dir():
        raise UsageError("--dest %s: not a folder" % dest)
    path = d / UNIT_NAME
    try:
        path.write_text(unit_text())
    except OSError as e:
        raise ToolError("cannot write %s: %s" % (path, e.strerror or e)) from None
    print("wrote %s (then: systemctl daemon-reload && systemctl enable --now v2g-daemon)"
          % path)


def run(args):
    if args.action == "install-unit":
        return install_unit(args.dest)
    if args.action == "check-tls":
        from v2g.gateway import billing_config, tls

        return tls.check_tls(billing_config.load(args.config))
    cfg = config_mod.load(args.config)
    _setup_logging(cfg.log_level)
    try:
        return asyncio.run(Daemon(cfg).main())
    except OSError as e:
        raise ToolError(str(e)) from None


def _setup_logging(level):
    # force: the station's config check imports Josev, whose import configures the root
    # logger onto stdout (stdout carries the daemon's lines and the station's events)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    logging.getLogger("v2g").setLevel(level.upper())
    if "iso15118" in sys.modules:
        from v2g.gateway.station import josev_logs_to_root

        josev_logs_to_root()
        logging.getLogger("iso15118").setLevel(logging.INFO)
    # pymodbus logs every malformed frame a client sends; the daemon counts refusals itself
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class Daemon:
    def __init__(self, cfg):
        from v2g.gateway.server import Gateway

        self.cfg = cfg
        self.gw = Gateway(cfg)
        self.stop = None
        self.peer = None
        self.device_error = None
        self.station = None
        self.sim_ev = None
        if cfg.sim_ev is not None:  # a stand-in car (simulated sites)
            from v2g.gateway.sim_ev import SimEv

            self.sim_ev = SimEv(cfg.sim_ev)
        self.billing = None
        if cfg.billing is not None:
            from v2g.gateway.billing_leg import BillingLeg

            self.billing = BillingLeg(self, cfg.billing)

    async def main(self):
        from v2g.gateway.server import GatewayServer

        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        server = GatewayServer(self.gw, self.cfg.modbus_host, self.cfg.modbus_port)
        await server.serve_forever(background=True)
        if not server.transport:
            raise ToolError("cannot listen on %s:%d" % (self.cfg.modbus_host,
                                                        self.cfg.modbus_port))
        print("v2g daemon: serving Modbus TCP on %s:%d, link %s" % (
            self.cfg.modbus_host, self.cfg.modbus_port, self.cfg.link_device), flush=True)
        tasks = [asyncio.ensure_future(self.updater()), asyncio.ensure_future(self.link())]
        relay = None
        if self.cfg.link_service_socket:  # the board's update service for local tools
            from v2g.gateway.service_relay import Relay

            relay = await Relay(self, self.cfg.link_service_socket).start()
        if self.sim_ev is not None:
            tasks.append(asyncio.ensure_future(self.sim_ev.run(lambda: self.peer)))
        if self.billing is not None:
            tasks += self.billing.tasks()
            print("v2g daemon: billing for %s to mqtts://%s:%d, outbox %s" % (
                self.cfg.billing.station, self.cfg.billing.host, self.cfg.billing.port,
                self.cfg.billing.outbox), flush=True)
        if self.cfg.station:
            await self._start_station()
        await self.stop.wait()
        log.info("daemon: stopping")
        if self.station is not None:
            await self.station.stop()
        if self.billing is not None:
            await self.billing.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.shutdown()
        if relay is not None:
            relay.close()
        await self._close_peer()
        if self.billing is not None:
            self.billing.close()
        print("v2g daemon: stopped", flush=True)
        return 0

    async def _start_station(self):
        from v2g.gateway.station import LinkFirmware, Station

        sc = self.cfg.station
        self.station = Station(sc["config"], LinkFirmware(lambda: self.peer), sc["iface"],
                               status_path=sc["status_path"])
        _setup_logging(self.cfg.log_level)  # Josev's imports reconfigure logging
        await self.station.start()
        if self.peer is not None and self.peer.state == "UP":
            self.station.link_up()

    async def updater(self):
        """The controls every UPDATE_S, and the datastore (``Gateway.refresh``) when no read
        has refreshed it for IDLE_REFRESH_S."""
        from v2g.gateway.server import UPDATE_S

        while True:
            try:
                await self.gw.background()
            except Exception:  # keep serving; the next image may be fine
                log.exception("daemon: updater step failed")
            await asyncio.sleep(UPDATE_S)

    async def link(self):
        """Open the device and hold a session: handshake, and again (fresh nonce) after
        the link has been lost for a heartbeat timeout; reopen the device after an I/O
        error (a USB adapter unplugged, the simulated board gone)."""
        cfg = self.cfg
        while True:
            if self.peer is not None and self.device_error:
                log.warning("link: %s: %s (reopening)", cfg.link_device, self.device_error)
                await self._close_peer()
                self.peer = self.gw.peer = None
            if self.peer is None:
                try:
                    self.peer = self._open_device()
                except Exception as e:  # noqa: BLE001 (serial.SerialException, OSError)
                    log.warning("link: cannot open %s: %s (retrying)", cfg.link_device, e)
                    await asyncio.sleep(1.0)
                    continue
                self.gw.peer = self.peer
            if self.peer.state != "UP" and not self.device_error:
                self.peer.nonce = int.from_bytes(os.urandom(4), "little")
                try:
                    hello = await self.peer.open(timeout=2.0)
                    log.info("link: session up, version %d, board %r", hello["version"],
                             hello.get("tail", ""))
                    if self.station is not None:
                        self.station.link_up()
                    if self.billing is not None:
                        self.billing.set_fw(hello.get("tail", ""))
                except (asyncio.TimeoutError, ConnectionError) as e:
                    log.warning("link: no session with the board: %s", e)
            await asyncio.sleep(cfg.link_hb_timeout_s)

    def _open_device(self):
        """A ``LinkPeer`` over the serial device (pyserial, non-blocking, read through the
        event loop's reader callback); an I/O error sets ``device_error`` instead of
        raising inside the loop's callbacks."""
        import serial

        from v2g.link import LinkPeer

        cfg = self.cfg
        ser = serial.Serial(cfg.link_device, baudrate=cfg.link_baudrate, timeout=0,
                            write_timeout=1)
        loop = asyncio.get_running_loop()
        self.device_error = None

        def write(data):
            if self.device_error:
                return
            try:
                ser.write(data)
            except (serial.SerialException, OSError) as e:
                self.device_error = "write: %s" % e

        peer = LinkPeer(write, hb_timeout_s=cfg.link_hb_timeout_s, log=log.debug)

        def readable():
            try:
                data = ser.read(ser.in_waiting or 1)
            except (serial.SerialException, OSError) as e:
                self.device_error = "read: %s" % e
                loop.remove_reader(ser.fileno())
                return
            if data:
                peer.feed(data)

        loop.add_reader(ser.fileno(), readable)
        peer.serial = ser
        return peer

    async def _close_peer(self):
        if self.peer is not None:
            await self.peer.close()
            ser = getattr(self.peer, "serial", None)
            if ser is not None:
                try:
                    asyncio.get_running_loop().remove_reader(ser.fileno())
                except (ValueError, OSError):
                    pass
                try:
                    ser.close()
                except OSError:
                    pass

    def ev_state(self):
        """The car's state as the daemon knows it (``commands.make_offer``'s EV fields:
        ``soc_pm``, ``soc_min_pm``, ``soc_max_pm``, ``capacity_wh``, ``max_charge_w``,
        ``max_discharge_w``), or None without a car. The ISO 15118 car of a ``station``
        section is not reported here yet: its session gives no battery capacity, which
        the SEMS shares by."""
        if self.sim_ev is not None:
            return self.sim_ev.state()
        return None

    def reload(self):
        try:
            new = config_mod.load(self.cfg.path)
        except UsageError as e:
            log.error("daemon: reload refused, keeping the last good config: %s", e)
            return
        for key in ("link_device", "link_baudrate", "modbus_host", "modbus_port", "billing",
                    "sems"):
            if getattr(new, key) != getattr(self.cfg, key):
                log.warning("daemon: %s changed: takes effect at the next start", key)
                setattr(new, key, getattr(self.cfg, key))
        self.cfg = new
        self.gw.cfg = new
        logging.getLogger("v2g").setLevel(new.log_level.upper())
        log.info("daemon: config reloaded from %s", new.path)
