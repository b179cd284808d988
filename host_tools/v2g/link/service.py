"""The board's SERVICE group 1 from the host: signed updates and signed configs over the link.

``Service(peer, port)`` sends ``SERVICE_REQ(1, command, data)`` over a ``LinkPeer`` and
reads the ``SERVICE_RSP`` answers (in request order); the command ids, statuses and
layouts are the board's own (``firmware/services/update_link.py``, loaded from this
checkout as ``P``; docs/update.md, "Over the link"). ``connect(port)`` opens a session
on a link port (bad port or no handshake: ``UsageError``), ``close(peer)`` ends it,
``wait_restart(port)`` waits for the restarted board's STATE. ``port`` may also be a
running daemon's service socket (``link.service_socket``): the daemon owns the link and
relays group-1 requests (``RelayPeer``; ``v2g.gateway.service_relay``). ``run_signed_config`` is
``v2g config push-signed FILE --link PORT``; ``v2g update --link`` is
``v2g.update.linkpath``.

Context: host only (asyncio).
"""

import asyncio
import importlib.util
import json
import os
import stat
import struct
import sys
import time
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import ToolError, UsageError
from v2g.link.codec import msgs, pack, unpack
from v2g.link.peer import open_serial

HELLO_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 20.0  # one answer; a job's POLL answers at once (WORKING)
BOOT_WAIT_S = 30.0
POLL_S = 0.02
IN_FLIGHT = 4  # WRITE requests sent before their answers are awaited


def _load_proto():
    """The board's own constants (command ids, statuses, layouts) from update_link.py."""
    name = "v2g_update_link"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, paths.FIRMWARE_DIR / "services" / "update_link.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


P = _load_proto()
STATUS = {P.OK: "OK", P.REJECTED: "REJECTED", P.MALFORMED: "MALFORMED",
          P.UNSUPPORTED: "UNSUPPORTED", P.WORKING: "WORKING", 5: "FAILED"}


class Refused(Exception):
    """The board refused the bundle or a step of its transfer (exit 1)."""


class Service:
    """Group-1 requests over one ``LinkPeer``; answers come back in request order."""

    def __init__(self, peer, port):
        self.peer = peer
        self.port = port
        self.pending = 0

    async def send(self, cmd, data=b""):
        payload = pack(msgs.SERVICE_REQ, (P.GROUP, cmd), data)
        try:
            await self.peer.request(msgs.SERVICE_REQ, payload, REPLY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ToolError("link %s: the board stopped taking requests (%s)"
                            % (self.port, P.COMMANDS[cmd])) from None
        self.pending += 1

    async def recv(self, cmd):
        try:
            v = await asyncio.wait_for(self.peer.service_rsp.get(), REPLY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ToolError("link %s: no answer to %s within %.0f s"
                            % (self.port, P.COMMANDS[cmd], REPLY_TIMEOUT_S)) from None
        self.pending -= 1
        if v["group"] == -1:
            raise ToolError("service socket %s: the daemon closed the relay (its link to the "
                            "board went down) while waiting for %s" % (self.port,
                                                                     P.COMMANDS[cmd]))
        if v["group"] != P.GROUP or v["command"] != cmd:
            raise ToolError("link %s: answer to %d/%d while waiting for %s"
                            % (self.port, v["group"], v["command"], P.COMMANDS[cmd]))
        if v["status"] == P.UNSUPPORTED and cmd == P.STATE:
            raise ToolError("the board's firmware on %s has no update service over the link "
                            "(SERVICE group 1); update it once over --port" % self.port)
        return v["status"], v.get("tail", b"")

    async def call(self, cmd, data=b""):
        await self.send(cmd, data)
        return await self.recv(cmd)

    async def ok(self, cmd, data=b"", what=None):
        st, tail = await self.call(cmd, data)
        if st != P.OK:
            raise Refused("%s: %s %s" % (what or P.COMMANDS[cmd], STATUS.get(st, st),
                                         bytes(tail).decode("utf-8", "replace")))
        return tail

    async def state(self):
        return json.loads(bytes(await self.ok(P.STATE)).decode())

    async def send_blob(self, cmd, blob, what):
        """Send ``blob`` with ``cmd`` (META, CONFIG_WRITE) in pieces that fill the link's
        payload, each led by its offset (``META_FMT``)."""
        step = (self.peer.hello["max_payload"] - msgs.FIXED_SIZE[msgs.SERVICE_REQ]
                - struct.calcsize(P.META_FMT))
        for off in range(0, len(blob), step):
            await self.ok(cmd, struct.pack(P.META_FMT, off) + blob[off:off + step], what)

    async def job(self, cmd):
        """Start BEGIN or COMMIT and POLL until it ends; returns its result dict."""
        await self.ok(cmd)
        while True:
            st, tail = await self.call(P.POLL)
            if st == P.OK:
                return json.loads(bytes(tail).decode())
            if st != P.WORKING:
                raise Refused("POLL: %s %s" % (STATUS.get(st, st),
                                               bytes(tail).decode("utf-8", "replace")))
            await asyncio.sleep(POLL_S)


def relay_message(payload):
    """One message of the daemon's service relay: u16 length (little-endian), bytes."""
    return struct.pack("<H", len(payload)) + payload


class RelayPeer:
    """The part of ``LinkPeer`` that ``Service`` uses, over a running daemon's service
    relay (``link.service_socket``, ``v2g.gateway.service_relay``): the daemon owns the
    link and forwards SERVICE_REQ payloads to the board and SERVICE_RSP payloads back.
    The daemon's first message is the board's payload limit (u16); it closes the socket
    when its link is not up (or goes down)."""

    def __init__(self, reader, writer, max_payload):
        self.reader = reader
        self.writer = writer
        self.hello = {"max_payload": max_payload}
        self.service_rsp = asyncio.Queue()
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self):
        try:
            while True:
                n = struct.unpack("<H", await self.reader.readexactly(2))[0]
                v = unpack(msgs.SERVICE_RSP, await self.reader.readexactly(n))
                self.service_rsp.put_nowait(v)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            # the daemon closed the relay (its link went down): answers stop here
            self.service_rsp.put_nowait({"group": -1, "command": -1, "status": -1,
                                         "tail": b"the daemon closed the relay"})

    async def request(self, msg_id, payload, timeout):
        self.writer.write(relay_message(payload))
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def close(self):
        self.pump.cancel()
        self.writer.close()


async def _connect_relay(path, timeout):
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError as e:
        raise UsageError("service socket %s: cannot connect (%s)" % (path, e)) from None
    try:
        n = struct.unpack("<H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
        max_payload = struct.unpack("<H", await reader.readexactly(n))[0]
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError,
            struct.error):
        writer.close()
        raise UsageError("service socket %s: the daemon has no link to the board now (or "
                         "another client holds the relay)" % path) from None
    return RelayPeer(reader, writer, max_payload)


async def connect(port, timeout=HELLO_TIMEOUT_S):
    """A session with the board's group-1 service: on a link port (the handshake), or
    through a running daemon's service socket (a Unix socket path)."""
    if stat.S_ISSOCK(_mode(port)):
        return await _connect_relay(port, timeout)
    try:
        peer = await open_serial(port)
    except Exception as e:  # noqa: BLE001 - serial.SerialException, OSError
        raise UsageError("link port %s: cannot open it (%s)" % (port, e)) from None
    try:
        await peer.open(timeout=timeout)
    except asyncio.TimeoutError:
        await close(peer)
        raise UsageError("link port %s: no answer to the link handshake within %.0f s (is it "
                         "the board's link port, the `link:` line of `v2g sim board`, and "
                         "no daemon holding it?)" % (port, timeout)) from None
    except ConnectionError as e:
        await close(peer)
        raise UsageError("link port %s: %s" % (port, e)) from None
    return peer


def _mode(path):
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


async def close(peer):
    await peer.close()
    ser = getattr(peer, "serial", None)
    if ser is not None:
        try:
            asyncio.get_running_loop().remove_reader(ser.fileno())
        except (ValueError, OSError):
            pass
        ser.close()


async def wait_restart(port):
    """STATE from the restarted board (a session with the old process, which answers
    ``rebooting`` until it resets, does not count); None at the timeout."""
    end = time.monotonic() + BOOT_WAIT_S
    await asyncio.sleep(0.3)
    while time.monotonic() < end:
        try:
            peer = await connect(port, timeout=2.0)
        except UsageError:
            await asyncio.sleep(0.2)
            continue
        try:
            st = await Service(peer, port).state()
        except (ToolError, Refused, ValueError):
            st = None
        finally:
            await close(peer)
        if st is not None and not st.get("rebooting"):
            return st
        await asyncio.sleep(0.2)
    return None


async def _signed_config(port, path, text, board, out):
    peer = await connect(port)
    try:
        svc = Service(peer, port)
        st = await svc.state()
        if st.get("board") and st["board"] != board:
            raise UsageError("signed config %s is for board '%s'; the board on %s is '%s'; "
                             "nothing changed" % (path, board, port, st["board"]))
        await svc.send_blob(P.CONFIG_WRITE, text, "sending the signed config")
        r = await svc.job(P.CONFIG_CHECK)
        if not r["ok"]:
            raise Refused(r["reason"])
        out("config: %s" % r["reason"])
        await svc.ok(P.REBOOT)
    finally:
        await close(peer)
    st = await wait_restart(port)
    if st is None:
        raise ToolError("the board did not come back on the link within %.0f s after the "
                        "restart" % BOOT_WAIT_S)
    out("config: the board restarted with the signed config (%s)"
        % ("production: console locked" if st.get("locked") else "console open"))
    return 0


def run_signed_config(args):
    """``v2g config push-signed FILE --link PORT``: exit 0 stored and the board restarted,
    1 refused by the board (reason printed), 2 bad input."""
    p = Path(args.file)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise UsageError("signed config %s: cannot read it (%s)" % (p, e)) from None
    try:
        if len(text) > P.CONFIG_MAX or text.index(b"\n") != 128:
            raise ValueError("not 128 hex digits, a newline, then JSON")
        bytes.fromhex(text[:128].decode())
        board = json.loads(text[129:])["board"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UsageError("signed config %s does not parse (%s); make it with `v2g "
                         "sign-config`" % (p, e)) from None

    def out(line):
        print(line, flush=True)

    try:
        return asyncio.run(_signed_config(args.link, p, text, board, out))
    except Refused as e:
        print("config: refused by the board: %s" % e)
        return 1


