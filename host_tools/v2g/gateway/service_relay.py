"""The daemon's service relay: the board's SERVICE group 1 for local tools while the
daemon owns the link.

    link: {device: /dev/ttyUSB1, service_socket: /run/v2g/link-service.sock}
    v2g update fw.v2gu --link /run/v2g/link-service.sock

The daemon holds the one session the link has; ``v2g update --link`` and ``v2g config
push-signed --link`` given this Unix socket instead of the UART reach the board through
it (``v2g.link.service.RelayPeer``). Messages both ways: u16 length (little-endian) and
bytes. The daemon's first message is the board's payload limit (u16); then every message
from the client is a ``SERVICE_REQ`` payload sent to the board as it comes, and every
``SERVICE_RSP`` from the board goes back as its payload, in order. One client at a time
(another one is closed at once); the socket is closed when the link is not up or goes
down (a board that restarts after an update), so the client reconnects once the daemon
has its new session. The socket is created with mode 0600: only the daemon's user (or
root) reaches it.

Context: host (the daemon's event loop).
"""

import asyncio
import logging
import os
import struct

from v2g.link.codec import msgs, pack
from v2g.link.service import relay_message

log = logging.getLogger("v2g.gateway")

REQUEST_TIMEOUT_S = 20.0


class Relay:
    def __init__(self, daemon, path):
        self.daemon = daemon
        self.path = path
        self.server = None
        self.busy = False

    async def start(self):
        try:
            os.unlink(self.path)  # a stale socket from an earlier run
        except OSError:
            pass
        self.server = await asyncio.start_unix_server(self._client, self.path)
        os.chmod(self.path, 0o600)
        return self

    def close(self):
        if self.server is not None:
            self.server.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    async def _client(self, reader, writer):
        peer = self.daemon.peer
        if self.busy or peer is None or peer.state != "UP" or not peer.hello:
            writer.close()
            return
        self.busy = True
        while not peer.service_rsp.empty():  # answers nobody waits for any more
            peer.service_rsp.get_nowait()
        writer.write(relay_message(struct.pack("<H", peer.hello["max_payload"])))
        back = asyncio.ensure_future(self._answers(peer, writer))
        try:
            while not back.done():
                n = struct.unpack("<H", await reader.readexactly(2))[0]
                payload = await reader.readexactly(n)
                if self.daemon.peer is not peer or peer.state != "UP":
                    break
                await peer.request(msgs.SERVICE_REQ, payload, REQUEST_TIMEOUT_S)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        except Exception:  # noqa: BLE001 - a relay client must not stop the daemon
            log.exception("service relay: client failed")
        finally:
            back.cancel()
            writer.close()
            self.busy = False

    async def _answers(self, peer, writer):
        """SERVICE_RSP payloads to the client until the link is no longer up."""
        while self.daemon.peer is peer and peer.state == "UP":
            try:
                v = await asyncio.wait_for(peer.service_rsp.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            writer.write(relay_message(pack(msgs.SERVICE_RSP, (
                v["group"], v["command"], v["status"]), v.get("tail", b""))))
        writer.close()
