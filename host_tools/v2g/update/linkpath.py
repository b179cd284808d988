"""``v2g update BUNDLE --link PORT``: a signed update over the framed link.

The way to update a board in production mode (no REPL). The port is the board's link
UART (the simulated board prints it as ``link: /dev/pts/M`` after its ``port:`` line),
which no ``v2g daemon`` may hold at the same time (the link has one peer); or a running
daemon's service socket (``link.service_socket``), through which the daemon relays the
same requests (``v2g.gateway.service_relay``).

1. the link handshake (``v2g.link.LinkPeer``); no answer within ``HELLO_TIMEOUT_S``:
   exit 2 (not a board's link port), nothing changed;
2. SERVICE group 1 (``firmware/services/update_link.py``, docs/update.md): STATE, the
   board's name against the bundle's (exit 2, nothing changed);
3. META (the bundle's header, manifest, digest and signature), BEGIN, POLL: the board
   checks digest, signature, board, counter and arch and prepares its inactive slot,
   keeping every file it already has with the same SHA-256; a refusal prints the board's
   reason, exit 1; a board that already runs the bundle: exit 0 at once;
4. NEED, then WRITE for the files the board lacks (chunks as large as the board's payload
   limit allows, a few in flight), with progress on stderr (bytes, rate, time left);
5. COMMIT, POLL: the board verifies the slot again (every file's size and SHA-256, the
   signature) and switches its pointer (trial); a refusal: exit 1, the running tree is
   untouched;
6. REBOOT; a new link session with the restarted board: exit 0 when it runs the bundle
   (trial or confirmed), 1 when it came back on the previous tree (the boot's note is
   printed).

Context: host only (asyncio inside ``run``).
"""

import asyncio
import struct
import time

from v2g.common.errors import ToolError, UsageError
from v2g.link import msgs
from v2g.link.service import (
    BOOT_WAIT_S,
    IN_FLIGHT,
    STATUS,
    P,
    Refused,
    Service,
    close,
    connect,
    wait_restart,
)


def _need_indices(bitmap, first):
    """Manifest indices whose bit is set in a NEED answer for files from ``first`` on."""
    return [first + 8 * j + i for j, byte in enumerate(bitmap) for i in range(8)
            if byte >> i & 1]


async def _update(port, path, b, t0, progress_cls, out):
    m = b.manifest
    names = [e[0] for e in m["files"]]
    peer = await connect(port)
    try:
        svc = Service(peer, port)
        st = await svc.state()
        if st.get("board") and st["board"] != m["board"]:
            raise UsageError("bundle %s is for board '%s'; the board on %s is '%s'; nothing "
                             "changed" % (path, m["board"], port, st["board"]))
        room = peer.hello["max_payload"] - msgs.FIXED_SIZE[msgs.SERVICE_REQ]
        await svc.send_blob(P.META, b.meta, "sending the metadata")
        r = await svc.job(P.BEGIN)
        if not r["ok"]:
            raise Refused(r["reason"])
        if r.get("same"):
            out("update: the board already runs %s (version %s): %d files unchanged (%.2f s)"
                % (path.name, m["version"], len(names), time.monotonic() - t0))
            return 0
        need = []
        first = 0
        while first < len(names):
            bm = bytes(await svc.ok(P.NEED, struct.pack(P.NEED_FMT, first)))
            need += _need_indices(bm, first)
            first += 8 * len(bm) if bm else len(names)
        total = sum(len(b.files[names[i]]) for i in need)
        free = (await svc.state()).get("free")  # after BEGIN prepared the slot
        if free is not None and total > free:
            raise Refused("the board has %.1f kB of flash free, the files it lacks take "
                          "%.1f kB; nothing switched" % (free / 1024, total / 1024))
        out("update: slot %s: %d of %d files to send (%.1f kB), %d unchanged (over the link)"
            % (r["slot"], len(need), len(names), total / 1024, r["kept"]))
        if need:
            await _send_files(svc, b, names, need, total, room, progress_cls)
        c = await svc.job(P.COMMIT)
        if not c["ok"]:
            raise Refused(c["reason"])
        await svc.ok(P.REBOOT)
    finally:
        await close(peer)
    st = await wait_restart(port)
    dt = time.monotonic() - t0
    if st is None:
        raise ToolError("the board did not come back on the link within %.0f s after the "
                        "restart" % BOOT_WAIT_S)
    if st.get("slot") != r["slot"]:
        out("update: the board did not start the bundle and runs the previous firmware: %s"
            % (st.get("notes") or "no reason recorded"))
        return 1
    out("update: the board runs version %s in %s (slot %s) (%.1f s)" % (
        m["version"], "trial" if st.get("state") == "trial" else "confirmed", r["slot"], dt))
    return 0


async def _send_files(svc, b, names, need, total, room, progress_cls):
    step = room - struct.calcsize(P.WRITE_FMT)
    bar = progress_cls(total)
    bar.show(force=True)
    done = 0
    for i in need:
        data = b.files[names[i]]
        offs = list(range(0, len(data), step)) or [0]
        for off in offs:
            if svc.pending >= IN_FLIGHT:
                await _write_answer(svc)
            await svc.send(P.WRITE, struct.pack(P.WRITE_FMT, i, off) + data[off:off + step])
            done += len(data[off:off + step])
            bar.show(done)
    while svc.pending:
        await _write_answer(svc)
    bar.show(total, force=True)
    bar.end()


async def _write_answer(svc):
    st, tail = await svc.recv(P.WRITE)
    if st != P.OK:
        raise Refused("writing the files: %s %s" % (STATUS.get(st, st),
                                                   bytes(tail).decode("utf-8", "replace")))


def run(port, path, b, t0, progress_cls):
    """Exit code per CONTRACTS (0 runs it, 1 refused); ``UsageError`` on bad input."""

    def out(text):
        print(text, flush=True)

    try:
        return asyncio.run(_update(port, path, b, t0, progress_cls, out))
    except Refused as e:
        print("update: refused by the board: %s" % e)
        return 1
