"""A lossy TCP proxy on loopback, between the daemon's publisher and the broker.

TLS over TCP cannot lose bytes without breaking the session, so "loss" is modelled as
what it does to a TCP connection: each chunk forwarded (either direction) is "lost" with
probability ``loss``; a lost chunk is either held back for ``delay_s`` (the
retransmission a real TCP stack would do; the connection stalls) or, with probability
``cut_share``, the connection is cut (both sides closed, the chunk dropped), as when a
backhaul link dies mid-stream. ``cut_all()`` cuts every open connection at once.

Decisions come from ``random.Random(seed + connection number)`` per connection: the same
seed gives the same decision sequence per connection (how many chunks a connection carries
still depends on timing).

Runs its own asyncio loop in a daemon thread: ``LossyProxy(target_port, loss, seed).start()``
returns the listening port on 127.0.0.1. Command line (demo, manual runs)::

    python -m v2g.backend.lossy_proxy --listen 18883 --target 127.0.0.1:8883 --loss 0.05

Context: host (tests, ``make billing-demo``). Loopback addresses only.
"""

import argparse
import asyncio
import random
import threading

LOOPBACK = "127.0.0.1"


class LossyProxy:
    def __init__(self, target_port, loss=0.0, seed=1, cut_share=0.25, delay_s=0.2,
                 listen_port=0, target_host=LOOPBACK):
        if target_host not in (LOOPBACK, "localhost"):
            raise ValueError("target %r: loopback only" % target_host)
        self.target = (target_host, target_port)
        self.loss, self.seed, self.cut_share, self.delay_s = loss, seed, cut_share, delay_s
        self.listen_port = listen_port
        self.stats = {"connections": 0, "chunks": 0, "delayed": 0, "cuts": 0}
        self._loop = None
        self._server = None
        self._writers = set()
        self._thread = None
        self._ready = threading.Event()

    # --- control (from any thread) ------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name="lossy-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("lossy proxy did not start")
        return self.listen_port

    def stop(self):
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def cut_all(self):
        """Cut every open connection now."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut_all)

    def set_loss(self, loss):
        self.loss = loss

    # --- inside the loop ----------------------------------------------------------------
    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, LOOPBACK, self.listen_port))
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self):
        self._server.close()
        self._cut_all()
        await asyncio.sleep(0)

    def _cut_all(self):
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _handle(self, creader, cwriter):
        n = self.stats["connections"]
        self.stats["connections"] += 1
        rng = random.Random(self.seed * 100003 + n)
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.transport.abort()
            return
        pair = (cwriter, swriter)
        self._writers.update(pair)
        cut = asyncio.Event()

        async def pump(reader, writer):
            try:
                while not cut.is_set():
                    data = await reader.read(65536)
                    if not data:
                        break
                    self.stats["chunks"] += 1
                    if self.loss > 0 and rng.random() < self.loss:
                        if rng.random() < self.cut_share:
                            self.stats["cuts"] += 1
                            cut.set()
                            break
                        self.stats["delayed"] += 1
                        await asyncio.sleep(self.delay_s)
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                cut.set()
                for w in pair:
                    w.transport.abort()
                    self._writers.discard(w)

        await asyncio.gather(pump(creader, swriter), pump(sreader, cwriter))


def main(argv=None):
    p = argparse.ArgumentParser(prog="lossy_proxy", description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--target", required=True, help="127.0.0.1:PORT")
    p.add_argument("--loss", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = LossyProxy(int(port), args.loss, args.seed, listen_port=args.listen,
                       target_host=host)
    proxy.start()
    print("lossy proxy 127.0.0.1:%d -> %s, loss %.3f, seed %d" % (
        proxy.listen_port, args.target, args.loss, args.seed), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
