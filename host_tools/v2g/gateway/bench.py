"""Load figure of the daemon's Modbus server: 8 clients polling 100 registers at 10 Hz.

``modbus_load(host, port, clients=8, registers=100, rate_hz=10, seconds=10)`` runs the
clients (pymodbus, one thread each, loopback only) against a running daemon and returns
``{"clients", "requests", "errors", "p50_ms", "p99_ms", "max_ms"}``; each client reads
``registers`` holding registers of the SunSpec device (model 701 onwards) every
1/``rate_hz`` s, deadlines advanced by the period (not from "now"). With no ``port`` it
starts an in-process server over a synthetic image (``_serve_sample``), so ``make bench``
can print it without a board. The clients run in a child process of their own, as a SCADA
or energy manager would: sharing the server's interpreter (and its lock) would add their
own scheduling to every response time.

Context: host (bench).
"""

import multiprocessing
import threading
import time


def _client_loop(host, port, registers, period, until, lat, errors):
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient(host, port=port, timeout=3, retries=0)
    c.connect()
    nxt = time.monotonic()
    while nxt < until:
        t0 = time.perf_counter()
        try:
            rr = c.read_holding_registers(40070, count=registers)
            if rr.isError():
                errors.append(1)
        except Exception:  # noqa: BLE001
            errors.append(1)
        lat.append(time.perf_counter() - t0)
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    c.close()


def _clients(host, port, clients, registers, rate_hz, seconds):
    """The pollers (threads of the calling process); returns (latencies s, errors)."""
    lat, errors = [], []
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_client_loop, args=(
        host, port, registers, 1.0 / rate_hz, until, lat, errors)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors


def modbus_load(host="127.0.0.1", port=None, clients=8, registers=100, rate_hz=10,
                seconds=10.0):
    """p50/p99/max response time (ms) of ``clients`` pollers; see the module docstring."""
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        raise ValueError("the load runs against loopback only, not %r" % host)
    stop = None
    if port is None:
        port, stop = _serve_sample()
    try:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            lat, errors = pool.apply(_clients, (host, port, clients, registers, rate_hz,
                                                seconds))
    finally:
        if stop:
            stop()
    lat.sort()
    if not lat:
        lat = [0.0]

    def q(x):
        return round(lat[min(len(lat) - 1, int(x * (len(lat) - 1)))] * 1000, 2)

    return {"clients": clients, "registers": registers, "rate_hz": rate_hz,
            "requests": len(lat), "errors": len(errors), "p50_ms": q(0.5), "p99_ms": q(0.99),
            "max_ms": round(lat[-1] * 1000, 2)}


def _serve_sample():
    """An in-process server (its own thread and event loop) over a fixed sample image."""
    import asyncio
    import socket

    from v2g.gateway import config, regmap
    from v2g.gateway.server import Gateway, GatewayServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config.parse({"link": {"device": "/dev/null"},
                        "modbus": {"host": "127.0.0.1", "port": port, "stale_s": 60}})

    class _Peer:  # a link that always has the sample image
        version, state, images, hello, counters = 1, "UP", 1, {"tail": "sample"}, {}
        image = regmap.SAMPLE_IMAGE

    gw = Gateway(cfg, peer=_Peer())
    ready, loop_box = threading.Event(), []

    def serve():
        async def main():
            srv = GatewayServer(gw, "127.0.0.1", port)
            await srv.serve_forever(background=True)
            loop_box.append((asyncio.get_running_loop(), srv))
            ready.set()
            while True:
                gw.refresh()
                await asyncio.sleep(0.05)

        try:
            asyncio.run(main())
        except RuntimeError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(10)

    def stop():
        loop, srv = loop_box[0]
        fut = asyncio.run_coroutine_threadsafe(srv.shutdown(), loop)
        fut.result(5)
        loop.call_soon_threadsafe(loop.stop)

    return port, stop


if __name__ == "__main__":
    import json

    print(json.dumps(modbus_load()))
