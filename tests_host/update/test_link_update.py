"""Signed updates over the link (SERVICE group 1, ``firmware/services/update_link.py``).

In process (CPython, a board folder): the service's requests end to end (META, BEGIN,
POLL, NEED, WRITE, COMMIT), what it refuses and that a refusal changes nothing: a write
outside the staged files, out of order, while the flash is held (energized on a
``flash_stalls_tick`` board), a tampered file (COMMIT refuses, pointer untouched).

On the virtual board (real firmware on the MicroPython unix runtime, real ptys, ``v2g``
as a subprocess): ``v2g update BUNDLE --link PORT`` with progress, the board then runs
the bundle in trial; the same bundle again skips every file (the figure prints with
``pytest -s``); a tampered bundle is refused (exit 1, the reason, running tree untouched);
a ``production: 1`` board (no REPL) takes an update over the link.
"""

import asyncio
import json
import os
import shutil
import struct
import time

import pytest

from support import update_helpers as H
from support.virtual_board import board_eval, mpremote, start_board, stop_board, v2g
from v2g.board import flash

# ---- in process ----


class _Hal:
    def ticks_us(self):
        return time.perf_counter_ns() // 1000

    def ticks_diff(self, a, b):
        return a - b


class _Sup:
    state = "WAIT_GRID"


class _App:
    def __init__(self, root):
        self.root = root
        self.hal = _Hal()
        self.supervisor = _Sup()
        self.held = False

    def flash_held(self):
        return self.held


def _req(svc, cmd, data=b""):
    st, out = svc.on_service(0, cmd, memoryview(bytes(data)))
    return st, (out.encode() if isinstance(out, str) else bytes(out))


def _send(svc, blob, chunk=472, corrupt=None):
    """The host's sequence against the service; returns (BEGIN result, COMMIT result)."""
    from services import update_link as UL

    b = H.bundle.parse(blob)
    meta = b.meta
    for off in range(0, len(meta), chunk - 4):
        assert _req(svc, UL.META, struct.pack("<I", off) + meta[off:off + chunk - 4])[0] == 0
    assert _req(svc, UL.BEGIN)[0] == UL.OK
    st, out = _req(svc, UL.POLL)
    assert st == UL.OK
    r = json.loads(out)
    if not r["ok"] or r["same"]:
        return r, None
    st, bm = _req(svc, UL.NEED, struct.pack("<H", 0))
    assert st == UL.OK
    names = [e[0] for e in b.manifest["files"]]
    need = [i for i in range(len(names)) if bm[i >> 3] >> (i & 7) & 1]
    assert len(need) == r["need_count"]
    for i in need:
        data = b.files[names[i]]
        if corrupt == names[i]:
            data = bytes([data[0] ^ 1]) + data[1:]
        for off in range(0, len(data), chunk - 6) or [0]:
            st, why = _req(svc, UL.WRITE, struct.pack("<HI", i, off) + data[off:off + chunk - 6])
            assert st == UL.OK, why
    assert _req(svc, UL.COMMIT)[0] == UL.OK
    st, out = _req(svc, UL.POLL)
    assert st == UL.OK
    return r, json.loads(out)


@pytest.fixture
def service(tmp_path):
    from services import update_link

    key, pub = H.keypair(1)
    root = H.board_root(tmp_path / "board", H.small_tree("v1"), pub)
    app = _App(root)
    return update_link.UpdateService(app, inline=True), app, key, root


def test_service_stages_and_switches(service):
    import bootslot
    from services import update_link as UL

    svc, app, key, root = service
    blob = H.make_bundle(H.small_tree("v2"), key, "2.0", 2)
    r, c = _send(svc, blob)
    assert r["ok"] and r["slot"] == "a" and r["need_count"] == 5 and r["kept"] == 1, r
    assert c["ok"] and c["job"] == "COMMIT", c
    ptr = bootslot.read_pointer(root)
    assert ptr["active"] == "a" and ptr["state"] == "trial" and ptr["version"] == "2.0"
    st = json.loads(_req(svc, UL.STATE)[1])
    assert st["board"] == "sim" and st["key"] is True and st["job"] is None
    assert st["step_max_us"] > 0
    assert _req(svc, UL.POLL)[0] == UL.OK  # the last result stays readable
    assert _req(svc, 99)[0] == UL.UNSUPPORTED
    # the committed slot is the trial's: no more writes into it
    st, why = _req(svc, UL.WRITE, struct.pack("<HI", 1, 0) + b"x")
    assert st == UL.REJECTED and b"nothing staged" in why, why


def test_service_refusals_change_nothing(service):
    import bootslot
    from services import update_link as UL

    svc, app, key, root = service
    before = H.snapshot(root)
    st, why = _req(svc, UL.WRITE, struct.pack("<HI", 0, 0) + b"x")
    assert st == UL.REJECTED and b"nothing staged" in why
    assert _req(svc, UL.COMMIT)[0] == UL.REJECTED
    assert _req(svc, UL.NEED, b"\x00")[0] == UL.MALFORMED
    assert _req(svc, UL.META, struct.pack("<I", 40) + b"x")[0] == UL.REJECTED  # not in order
    app.held = True  # energized on a flash_stalls_tick board
    for cmd, data in ((UL.META, struct.pack("<I", 0) + b"V2GU"), (UL.BEGIN, b""),
                      (UL.WRITE, struct.pack("<HI", 0, 0)), (UL.COMMIT, b"")):
        st, why = _req(svc, cmd, data)
        assert st == UL.REJECTED and b"flash_stalls_tick" in why, (cmd, why)
    assert H.snapshot(root) == before
    app.held = False
    # a flipped signature bit: BEGIN refuses, nothing staged
    blob = H.make_bundle(H.small_tree("v2"), key, "2.0", 2)
    b = H.bundle.parse(blob)
    bad = bytearray(blob)
    bad[len(b.header) + len(b.manifest_bytes) + 32 + 5] ^= 0x10
    r, c = _send(svc, bytes(bad))
    assert not r["ok"] and r["name"] == "SIGNATURE" and "signature" in r["reason"], r
    assert bootslot.read_pointer(root) is None
    # staged, then a write out of place and of a file the board does not need
    r, c = _send(svc, blob, corrupt="mod1.mpy")
    assert r["ok"] and not c["ok"] and c["name"] == "FILE" and "SHA-256" in c["reason"], c
    assert bootslot.read_pointer(root) is None  # the running tree still boots
    assert _req(svc, UL.WRITE, struct.pack("<HI", 0, 5) + b"x")[0] == UL.REJECTED
    names = sorted(H.small_tree("v2"))
    kept = names.index("board.json")  # the same bytes in both trees: not needed
    st, why = _req(svc, UL.WRITE, struct.pack("<HI", kept, 0) + b"x")
    assert st == UL.REJECTED and b"not one the board needs" in why, why


def test_service_runs_jobs_in_steps(tmp_path):
    """BEGIN's and COMMIT's work is many short steps (the loop runs between them), not
    one block: the signature check in 16 steps, hashing every 4 KB."""
    from services import update

    key, pub = H.keypair(1)
    big = (700, 40000, 3000, 256)
    root = H.board_root(tmp_path / "b", H.small_tree("v1", sizes=big), pub)
    b = H.bundle.parse(H.make_bundle(H.small_tree("v2", sizes=big), key, "2.0", 2))
    H.write(root + update.META, b.meta)
    out = [None]
    n_begin = sum(1 for _ in update.begin_steps(root, None, None, out))
    assert out[0]["ok"] and n_begin >= 16 + 40000 // 4096, (n_begin, out[0])
    for name, _ in out[0]["need"]:
        H.write(out[0]["dir"] + name, b.files[name])
    steps = sum(1 for _ in update.commit_steps(root, None, out))
    assert out[0]["ok"] and steps >= 16 + 40000 // 4096, (steps, out[0])
    print("\nBEGIN in %d steps, COMMIT in %d (a 44 KB tree)" % (n_begin, steps))


_MP_STEPS = """
import json, sys, time
from services import update
root = sys.argv[1] + "/"
def run(gen):
    n = 0
    longest = 0
    t0 = t = time.ticks_us()
    for _ in gen:
        now = time.ticks_us()
        longest = max(longest, time.ticks_diff(now, t))
        n += 1
        t = now
    longest = max(longest, time.ticks_diff(time.ticks_us(), t))
    return n, longest, time.ticks_diff(time.ticks_us(), t0)
out = [None]
b = run(update.begin_steps(root, None, None, out))
r = out[0]
for name, size in r["need"]:
    with open(sys.argv[1] + "/files/" + name.replace("/", "%"), "rb") as f:
        data = f.read()
    with open(r["dir"] + name, "wb") as f:
        f.write(data)
c = run(update.commit_steps(root, None, out))
print(json.dumps({"begin": b, "commit": c, "ok": r["ok"] and out[0]["ok"]}))
"""


def test_steps_on_micropython(tmp_path, micropython_exe):
    """The same steps on the MicroPython unix runtime: the update completes, and the
    longest step (the loop is blocked for no longer) prints with ``pytest -s``."""
    import subprocess

    from support.link_helpers import board_env
    from v2g.board import flash

    key, pub = H.keypair(1)
    tree = {n: p.read_bytes() for n, p in flash.source_files("sim").items()}
    root = tmp_path / "b"
    H.board_root(root, H.small_tree("v1"), pub)
    b = H.bundle.parse(H.make_bundle(tree, key, "2.0", 2))
    H.write(root / "upd.meta", b.meta)
    (root / "files").mkdir()
    for name, data in b.files.items():
        (root / "files" / name.replace("/", "%")).write_bytes(data)
    (tmp_path / "steps.py").write_text(_MP_STEPS)
    r = subprocess.run([micropython_exe, str(tmp_path / "steps.py"), str(root)],
                       capture_output=True, text=True, env=board_env(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ok"] and res["begin"][0] >= 16 and res["commit"][0] >= 16 + len(tree), res
    print("\nunix runtime, %d files %.0f kB: BEGIN %d steps in %.1f ms (longest %.1f ms), "
          "COMMIT %d steps in %.1f ms (longest %.1f ms)" % (
              len(tree), sum(map(len, tree.values())) / 1024, res["begin"][0],
              res["begin"][2] / 1000, res["begin"][1] / 1000, res["commit"][0],
              res["commit"][2] / 1000, res["commit"][1] / 1000))


# ---- on the virtual board ----


def _hold_link(link_port, seconds):
    """Be the daemon for a while (the board confirms a trial only with its link up)."""
    from v2g.link import service as linkpath

    async def main():
        peer = await linkpath.connect(link_port, timeout=10)
        try:
            await asyncio.sleep(seconds)
            return await linkpath.Service(peer, link_port).state()
        finally:
            await linkpath.close(peer)

    return asyncio.run(main())


def _link_state(link_port):
    from v2g.link import service as linkpath

    async def main():
        peer = await linkpath.connect(link_port, timeout=10)
        try:
            return await linkpath.Service(peer, link_port).state()
        finally:
            await linkpath.close(peer)

    return asyncio.run(main())


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("lkeys") / "k"
    r = v2g("keys", "new", "--out", d)
    assert r.returncode == 0, r.stderr
    return d


def _sign(keys, out, version, counter, *extra):
    r = v2g("sign", "--key", keys / "signing.key", "--board", "sim", "--version", version,
            "--security-counter", counter, "--out", out, *extra, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _flash(tmp_path, keys, cfg):
    fl = tmp_path / "flash"
    fl.mkdir()
    shutil.copyfile(keys / "signing.pub", fl / "update_key.pub")
    (fl / "config.json").write_text(json.dumps(cfg))
    return fl


def _tree_files(flash_dir, slot):
    d = flash_dir / "slots" / slot if slot != "r" else flash_dir
    return {k: v for k, v in H.snapshot(d).items() if not k.startswith(("log/", "slots/"))
            and k not in ("resets.json", "upd.meta", "slot.json")}


def test_update_over_link(tmp_path, keys):
    b2 = _sign(keys, tmp_path / "b2.v2gu", "2.0", 2)
    proc, port, flash_dir = start_board(_flash(tmp_path, keys, {"upd_confirm_s": 1}))
    try:
        link = proc.link_port
        r = v2g("update", b2, "--link", link, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "runs version 2.0 in trial (slot a)" in r.stdout, r.stdout
        assert "kB/s" in r.stderr and "s left" in r.stderr  # progress: bytes, rate, time left
        print("\n" + r.stdout.strip().splitlines()[-1])
        st = _hold_link(link, 3.0)  # the board syncs with its link up and confirms
        assert st["slot"] == "a" and st["version"] == "2.0", st
        assert st["pointer_state"] == "ok" and st["floor"] == 2, st
        # the same bundle again: every file skipped by hash
        t0 = time.monotonic()
        r = v2g("update", b2, "--link", link, timeout=60)
        dt = time.monotonic() - t0
        assert r.returncode == 0 and "already runs" in r.stdout, r.stdout + r.stderr
        print("unchanged bundle over the link: %.2f s with process start-up (%s)"
              % (dt, r.stdout.strip().split("unchanged ")[-1]))
        # tampered: a flipped bit in a file the board lacks (another tree: every file is
        # sent): the board takes the files and refuses at COMMIT; a flipped signature bit:
        # refused at BEGIN. Either way the pointer and the running tree are untouched.
        before = _tree_files(flash_dir, "a")
        ptr = (flash_dir / "slot.json").read_bytes()
        tree = tmp_path / "tree"
        for name, src in flash.source_files("sim").items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tree / name)
        b3 = bytearray(_sign(keys, tmp_path / "b3.v2gu", "3.0", 3, "--tree", tree).read_bytes())
        b3[-10] ^= 0x04
        r = v2g("update", H.write(tmp_path / "bad.v2gu", bytes(b3)), "--link", link, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "refused by the board" in r.stdout and "SHA-256 differs" in r.stdout, r.stdout
        b3[-10] ^= 0x04
        m_len = struct.unpack_from("<I", b3, 8)[0]
        b3[12 + m_len + 32 + 7] ^= 0x01
        r = v2g("update", H.write(tmp_path / "bad.v2gu", bytes(b3)), "--link", link, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "refused by the board" in r.stdout and "signature" in r.stdout, r.stdout
        print(r.stdout.strip())
        assert (flash_dir / "slot.json").read_bytes() == ptr
        assert _tree_files(flash_dir, "a") == before
        assert _link_state(link)["slot"] == "a"  # still running, on the same tree
        # a port where no board answers: bad input
        master, slave = os.openpty()
        try:
            r = v2g("update", b2, "--link", os.ttyname(slave), timeout=60)
        finally:
            os.close(master)
            os.close(slave)
        assert r.returncode == 2 and "handshake" in r.stderr, r.stdout + r.stderr
    finally:
        stop_board(proc)


def test_update_over_link_production_board(tmp_path, keys):
    b2 = _sign(keys, tmp_path / "p2.v2gu", "2.0", 2)
    proc, port, flash_dir = start_board(_flash(tmp_path, keys, {"production": 1,
                                                                   "upd_confirm_s": 1}))
    try:
        st = _link_state(proc.link_port)
        assert st["slot"] == "r" and st["board"] == "sim", st
        assert st["free"] > 100000, st  # flash bytes free, for the slot
        try:
            r = mpremote(port, "resume", "exec", "print('in')", timeout=4)
            assert "in" not in r.stdout and r.returncode != 0, r
        except Exception:  # noqa: BLE001 - TimeoutExpired: no prompt ever came
            pass
        r = v2g("update", b2, "--link", proc.link_port, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "runs version 2.0 in trial" in r.stdout, r.stdout
        st = _link_state(proc.link_port)
        assert st["slot"] == "a" and st["state"] == "trial" and st["version"] == "2.0", st
        assert st["locked"] is True
        assert json.loads((flash_dir / "lock.json").read_text())["production"] == 1
        st = _hold_link(proc.link_port, 3.0)  # confirmed with the link up
        assert st["pointer_state"] == "ok", st
        # leaving production: a signed config over the link (and not a replay of it)
        signed = tmp_path / "unlock.signed"
        r = v2g("sign-config", "--key", keys / "signing.key", "--board", "sim", "--counter", 1,
                "--set", "production=0", "--out", signed)
        assert r.returncode == 0, r.stderr
        r = v2g("config", "push-signed", signed, "--link", proc.link_port, timeout=60)
        assert r.returncode == 0 and "console open" in r.stdout, r.stdout + r.stderr
        assert board_eval(port, "_app.locked") is False  # the REPL is back
        assert json.loads((flash_dir / "lock.json").read_text()) == {
            "production": 0, "unlock_counter": 1}
        r = v2g("config", "push-signed", signed, "--link", proc.link_port, timeout=60)
        assert r.returncode == 1 and "replay" in r.stdout, r.stdout + r.stderr
        assert board_eval(port, "_app.locked") is False
        assert not (flash_dir / "config.signed").exists()
    finally:
        stop_board(proc)


def test_update_through_the_daemon(tmp_path, keys):
    """The daemon owns the link; its service socket relays the update, and the trial
    confirms with the daemon's session up."""
    import signal
    import subprocess

    import yaml
    from support.gateway_rig import free_port
    from support.virtual_board import _env, v2g_cmd

    b2 = _sign(keys, tmp_path / "d2.v2gu", "2.0", 2)
    proc, port, flash_dir = start_board(_flash(tmp_path, keys, {"upd_confirm_s": 1}))
    sock = tmp_path / "svc.sock"
    cfg = tmp_path / "v2g.yaml"
    cfg.write_text(yaml.safe_dump({
        "link": {"device": proc.link_port, "service_socket": str(sock)},
        "modbus": {"host": "127.0.0.1", "port": free_port()}}))
    daemon = subprocess.Popen(v2g_cmd() + ["daemon", "--config", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env())
    try:
        line = daemon.stdout.readline()
        assert "serving" in line, line + daemon.stderr.read()
        end = time.monotonic() + 20
        while True:  # the relay answers once the daemon's session is up
            try:
                st = _link_state(str(sock))
                break
            except Exception:  # noqa: BLE001 - UsageError: no session yet
                assert time.monotonic() < end, "the daemon's relay never came up"
                time.sleep(0.3)
        assert st["slot"] == "r", st
        r = v2g("update", b2, "--link", sock, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "runs version 2.0 in trial (slot a)" in r.stdout, r.stdout
        print("\nthrough the daemon: " + r.stdout.strip().splitlines()[-1])
        end = time.monotonic() + 20
        while True:  # confirmed: the daemon holds the link, the board syncs
            st = _link_state(str(sock))
            if st["pointer_state"] == "ok":
                break
            assert time.monotonic() < end, st
            time.sleep(0.5)
        assert st["slot"] == "a" and st["floor"] == 2, st
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        stop_board(proc)
    assert not sock.exists()  # removed at the daemon's stop
