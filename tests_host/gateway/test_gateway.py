"""``v2g daemon`` end to end: the daemon process on a pty, the board side of the link on
the MicroPython unix runtime (a fake supervisor), real clients (pymodbus, pysunspec2, the
``v2g modbus`` command) on loopback.

One rig serves the whole module (start ~1 s); tests that change permissions do it as an
operator would, by rewriting the config and sending SIGHUP, and put it back.
"""

import json
import subprocess
import sys
import time

import pytest
from support.gateway_rig import TOKEN, Rig
from v2g.gateway import modbus_cmd, regmap

RM = regmap.build()
WRITABLE = [r for r in RM.regs if r.setting is not None and r.setting.kind != "unlock"]
GOOD_WRITES = {"enabled": True, "allow": ["127.0.0.1"], "unlock_token": TOKEN}


@pytest.fixture(scope="module")
def rig(tmp_path_factory, micropython_exe):
    r = Rig(tmp_path_factory.mktemp("gw"), micropython_exe).start()
    yield r
    r.stop()


def addr(name):
    return RM.by_name[name].addr


def read(c, name):
    r = RM.by_name[name]
    rr = c.read_holding_registers(r.addr, count=r.size)
    assert not rr.isError(), rr
    return regmap.decode_words(r, rr.registers)


def token_words(token=TOKEN):
    b = token.encode().ljust(32, b"\0")
    return [(b[i] << 8) | b[i + 1] for i in range(0, 32, 2)]


def unlock(c, token=TOKEN):
    return c.write_registers(regmap.UNLOCK_ADDR, token_words(token))


def exc(rr):
    return getattr(rr, "exception_code", None) if rr.isError() else 0


def wait_for(fn, timeout=3.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def snapshot(c):
    """Every writable point's words plus the power and setpoint in force."""
    out = {}
    for r in WRITABLE + [RM.by_name["status.p_w"], RM.by_name["status.setpoint_id"]]:
        out[r.name] = c.read_holding_registers(r.addr, count=r.size).registers
    return out


def test_starts_within_10_s_and_40001_is_the_contactor(rig):
    assert rig.start_s < 10.0
    print("daemon start to serving: %.2f s" % rig.start_s)
    out = subprocess.run([sys.executable, "-m", "v2g.cli", "modbus", "read", "0", "--port",
                          str(rig.port), "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"address": 0, "values": [2]}  # CLOSED


def test_every_documented_register_reads(rig):
    with rig.client() as c:
        for start, n in RM.regions():
            for a in range(start, start + n, 125):
                rr = c.read_holding_registers(a, count=min(125, start + n - a))
                assert not rr.isError(), (a, rr)
        assert read(c, "status.state") == 4  # ENERGIZED
        assert read(c, "status.f_hz") == 6001
        assert read(c, "status.t_module_c") == 412
        assert read(c, "status.last_fault") == int.from_bytes(b"0x07\0\0\0\0", "big")
        assert read(c, "status.tick_count") == 123456
        assert read(c, "status.link_state") == 1
        assert read(c, "status.v_a_v") == 2301  # link v2: per-phase voltages
        assert read(c, "status.tick_cost_pct") == 210  # 21 us of 100 us, SF -1
        assert c.read_holding_registers(40000, count=2).registers == [0x5375, 0x6E53]
        end = RM.sunspec_end - 2
        assert c.read_holding_registers(end, count=2).registers == [0xFFFF, 0]
        # outside the map: exception 02
        assert exc(c.read_holding_registers(regmap.STATUS_LEN, count=1)) == 2
        assert exc(c.read_holding_registers(RM.sunspec_end, count=1)) == 2


def test_sunspec_scan_every_point_decodes(rig):
    models = modbus_cmd.scan("127.0.0.1", rig.port)
    ids = [m for m, _, _ in models]
    assert ids == [1, 701, 702, 704, 705, 706, 707, 708, 709, 710, 713]
    pts = {m: dict((n, v) for n, v, _ in p) for m, _, p in models}
    npts = sum(len(p) for p in pts.values())
    print("pysunspec2 scan: %d models, %d points" % (len(ids), npts))
    for m, _, p in models:
        spec = {n for n, _, _ in p}
        want = {r.name.split(".", 1)[1] for r in RM.regs if r.name.startswith("%d." % m)}
        assert spec == want, (m, spec ^ want)
    assert pts[1]["SN"] == "TEST-0001"
    assert abs(pts[701]["W"] - 7000) <= 70  # exporting 7 kW: generation positive
    assert abs(pts[701]["Hz"] - 60.012) < 0.001
    assert pts[701]["LNV"] == pytest.approx(230.1, abs=0.1)
    assert pts[702]["WMaxRtg"] == 11000
    assert pts[706]["Crv[0].Pt[0].V"] == pytest.approx(106.0)
    assert pts[708]["Crv[0].MustTrip.Pt[1].V"] == pytest.approx(120.0)
    assert pts[710]["Crv[0].MustTrip.Pt[0].Hz"] == pytest.approx(61.2)
    assert pts[709]["Crv[0].MustTrip.Pt[1].Hz"] == pytest.approx(56.5)
    assert pts[713]["SoC"] is None and pts[713]["WHAvail"] is None  # until ISO 15118


def test_export_limit_50pct_follows_and_repeats_change_nothing(rig):
    with rig.client() as c:
        assert exc(unlock(c)) == 0
        n0 = len(rig.setpoints())
        assert exc(c.write_register(addr("704.WMaxLimPct"), 50)) == 0
        assert len(rig.setpoints()) == n0  # limit not enabled yet: nothing to do
        t0 = time.monotonic()
        assert exc(c.write_register(addr("704.WMaxLimPctEna"), 1)) == 0
        assert wait_for(lambda: read(c, "status.p_w") == -5500)
        print("export limit 50%%: P -7000 -> %d W in %.0f ms (write to image)" % (
            read(c, "status.p_w"), (time.monotonic() - t0) * 1000))
        assert [s[2:] for s in rig.setpoints()[n0:]] == [[-5500, 0]]
        n1 = len(rig.setpoints())
        for _ in range(100):
            assert exc(c.write_register(addr("704.WMaxLimPct"), 50)) == 0
            assert exc(c.write_register(addr("704.WMaxLimPctEna"), 1)) == 0
        time.sleep(0.3)
        assert len(rig.setpoints()) == n1 and read(c, "status.p_w") == -5500
        assert read(c, "704.WMaxLimPct") == 50
        # lifting the limit brings the power others commanded back
        assert exc(c.write_register(addr("704.WMaxLimPctEna"), 0)) == 0
        assert wait_for(lambda: read(c, "status.p_w") == -7000)


def test_wset_int32_and_volt_watt_config(rig):
    with rig.client() as c:
        assert exc(unlock(c)) == 0
        a = addr("704.WSet")
        assert exc(c.write_registers(a, [0, 3000])) == 0  # 3 kW generation (int32)
        assert exc(c.write_register(addr("704.WSetEna"), 1)) == 0
        assert wait_for(lambda: read(c, "status.p_w") == -3000)
        assert exc(c.write_register(addr("704.WSetEna"), 0)) == 0
        assert wait_for(lambda: read(c, "status.p_w") == -7000)
        n = len(rig.applied)
        v1 = addr("706.Crv[0].Pt[0].V")
        assert exc(c.write_register(v1, 10700)) == 0  # 107.00 % -> vw_v1_pu 1.07
        # the config command reaches the board rig after the Modbus reply: wait for it
        assert wait_for(lambda: rig.applied[n:] == [["config", [["vw_v1_pu", 1.07]]]]), \
            rig.applied[n:]
        assert read(c, "706.Crv[0].Pt[0].V") == 10700
        assert exc(c.write_register(v1, 10700)) == 0  # same value: no command
        time.sleep(0.2)
        assert len(rig.applied) == n + 1
        # trip settings: OF1 at 61.5 Hz for 200 s (of1_dhz 1.5, of1_s 200.0)
        p0 = addr("710.Crv[0].MustTrip.Pt[0].Hz")
        assert exc(c.write_registers(p0, [0, 6150, 0, 20000])) == 0
        assert rig.applied[-1] == ["config", [["of1_dhz", 1.5], ["of1_s", 200.0]]]


def test_modbus_command_write_and_scan(rig):
    def v2g(*args):
        return subprocess.run([sys.executable, "-m", "v2g.cli", "modbus", *args, "--port",
                               str(rig.port)], capture_output=True, text=True, timeout=60)

    a = str(addr("704.WMaxLimPct"))
    out = v2g("write", a, "70")
    assert out.returncode == 1 and "exception 01" in out.stderr  # no token: locked
    out = v2g("write", a, "70", "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    out = v2g("read", a, "--json")
    assert json.loads(out.stdout) == {"address": int(a), "values": [70]}
    out = v2g("scan")
    assert out.returncode == 0, out.stderr
    assert "model 713 DER Storage Capacity" in out.stdout and "SoC" in out.stdout


def test_permission_matrix_every_refusal_changes_nothing(rig):
    a_lim, a_v1 = addr("704.WMaxLimPct"), addr("706.Crv[0].Pt[0].V")
    tried = refused = 0
    with rig.client() as c:
        before, n_applied = snapshot(c), len(rig.applied)
        refused0 = read(c, "status.writes_refused")

        def refuse(rr, codes):
            nonlocal tried, refused
            tried += 1
            refused += exc(rr) in codes
            assert exc(rr) in codes, rr

        # before unlock (this connection never wrote the token)
        for r in WRITABLE:
            refuse(c.write_registers(r.addr, [1] * r.size), (1,))
        refuse(unlock(c, "wrong-token-000"), (3,))
        refuse(c.write_register(a_lim, 40), (1,))
        assert exc(unlock(c)) == 0
        # read-only registers, 40001 first; a partial int32; unmapped
        for name in ("status.contactor_status", "status.p_w", "701.W", "1.SN", "702.WMax",
                     "704.WSetMod", "705.Ena", "713.SoC", "SunS"):
            r = RM.by_name[name]
            refuse(c.write_registers(r.addr, [0] * r.size), (2,))
        refuse(c.write_register(0, 0), (2,))
        refuse(c.write_register(addr("704.WSet"), 1), (2,))
        refuse(c.write_register(60, 1), (2,))
        # out of the parameter table's range or resolution, out of a control's range
        refuse(c.write_register(a_v1, 11000), (3,))  # 1.10 pu > vw_v1_pu max 1.09
        refuse(c.write_register(a_v1, 10705), (3,))  # not a step of 0.01 pu
        refuse(c.write_register(a_lim, 101), (3,))
        refuse(c.write_registers(addr("704.WSet"), [0, 60000]), (3,))  # above p_rated_w
        refuse(c.write_register(addr("708.Crv[0].MustTrip.Pt[1].V"), 12100), (3,))  # OV2 fixed
        # coils are not served
        refuse(c.write_coil(0, True), (1, 2))
        after = snapshot(c)
    assert after == before and len(rig.applied) == n_applied
    # writes disabled; then an allow-list without this client (no traffic leaves loopback)
    for writes in ({"enabled": False}, {"enabled": True, "allow": ["10.0.0.0/8"],
                                        "unlock_token": TOKEN}):
        rig.reconfigure(writes=writes)
        with rig.client() as c:
            refuse(unlock(c), (1,))
            for r in WRITABLE:
                refuse(c.write_registers(r.addr, [1] * r.size), (1,))
            assert snapshot(c) == before
    rig.reconfigure(writes=GOOD_WRITES)
    with rig.client() as c:
        counted = read(c, "status.writes_refused") - refused0
    assert len(rig.applied) == n_applied
    assert counted == tried == refused
    print("permission matrix: %d writes tried, %d refused, %d counted, 0 applied"
          % (tried, refused, counted))


def test_bad_config_on_sighup_keeps_the_last_good_one(rig):
    rig.reconfigure(raw_text="link: {device: /dev/null}\nmodbus: {port: 70000}\n",
                    wait_line="reload refused")
    assert "'modbus.port': value 70000" in rig.log_text()
    with rig.client() as c:  # still serving on the old port, writes still allowed
        assert exc(unlock(c)) == 0
    rig.reconfigure(writes=GOOD_WRITES)


def test_link_down_reads_stale_and_refuses_writes(rig):
    with rig.client() as c:
        assert exc(unlock(c)) == 0
        rig.link(False)
        t_cut = time.monotonic()
        try:
            assert wait_for(lambda: read(c, "status.contactor_status") == 0xFFFF, 8.0)
            t_stale = time.monotonic()
            words = c.read_holding_registers(0, count=42).registers
            assert words[0] == 0xFFFF and words[17:19] == [0x8000, 0]
            assert read(c, "701.W") == -0x8000 and read(c, "701.Hz") == 0xFFFFFFFF
            assert read(c, "706.Crv[0].Pt[0].V") == 0xFFFF
            assert read(c, "701.W_SF") == 0 and read(c, "701.ID") == 701  # structure stays
            # LOST follows the link timeout (docs/link.md); generous for a loaded machine
            assert wait_for(lambda: read(c, "status.link_state") == 3, 10.0)
            n = len(rig.applied)
            assert exc(c.write_register(addr("704.WMaxLimPct"), 30)) == 4
            assert len(rig.applied) == n
        finally:
            rig.link(True)
            t_up = time.monotonic()
        assert wait_for(lambda: read(c, "status.contactor_status") == 2, 8.0)
        print("link down: stale %.1f s after the cut; values back %.1f s after restore"
              % (t_stale - t_cut, time.monotonic() - t_up))
        assert read(c, "status.link_state") == 1


def test_sigterm_stops_cleanly(rig):
    rc = rig.stop()
    assert rc == 0
    assert "v2g daemon: stopped" in rig.daemon.stdout.read()


def test_a_read_encodes_exactly_the_words_of_a_whole_refresh():
    """A read encodes only the points it reads; every range must come out as the whole
    map's encode gives it (points cut by the range's ends included)."""
    from v2g.link.codec import msgs

    image = {name: (k * 37) % 500 for k, name in enumerate(msgs.REGISTER_FIELDS)}
    snap = regmap.Snap(image=image, params={}, controls={}, stale=False, link={},
                       fw="v2g-fw test", serial="SN1")
    whole = RM.encode(snap)
    n = RM.sunspec_end
    garbage = [0] * n  # unmapped words stay 0 in the server's words, mapped ones are old
    for a, size in RM.regions():
        garbage[a:a + size] = [0xDEAD] * size
    for start in range(0, n, 11):
        for count in (1, 2, 13, 125):
            out = list(garbage)
            RM.encode(snap, out, start, start + count)
            end = min(n, start + count)
            assert out[start:end] == whole[start:end], (start, count)
    stale = RM.encode(regmap.Snap(image=image, stale=True))
    out = list(garbage)
    RM.encode(regmap.Snap(image=image, stale=True), out, 0, 60)
    assert out[:60] == stale[:60]
