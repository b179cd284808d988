"""The persistent event log (``firmware/eventlog.py``) in both runtimes, and its power-cut
sweep on LittleFS.

- the sweep (``host_tools/v2g/build/mp/powercut_runner.py sweep``) on the MicroPython unix
  runtime, ``os.VfsLfs2`` on a RAM flash that loses power at every single write of a run
  (and, torn, halfway through it), in two geometries: 64 x 512-byte blocks and 16 x 4096
  (the block size of rp2/esp32 flash). Every write is swept (~300 each, ~5 s each);
  the figures print with ``pytest -s`` / ``-rP``;
- the runner's portable ``CHECKS`` on the unix runtime (VfsLfs2 and plain files) and,
  the same functions, under CPython on plain files;
- a few CPython-only details (the CRC fallback, bad arguments).
"""

import importlib.util
import json

import pytest

from v2g.common import paths, runtime

RUNNER = paths.MP_DIR / "powercut_runner.py"


def _runner_module():
    spec = importlib.util.spec_from_file_location("powercut_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pc = _runner_module()


def _run(micropython_exe, *args, heapsize=None):
    r = runtime.run_micropython(RUNNER, [str(a) for a in args], exe=micropython_exe,
                                timeout=120, heapsize=heapsize)
    out = r.stdout.decode("utf-8", "replace")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, "runner printed no result (exit %d): %s %s" % (
        r.returncode, out[-2000:], r.stderr.decode("utf-8", "replace")[-2000:])
    return r.returncode, json.loads(lines[-1]), out


@pytest.mark.parametrize("block,blocks", [(512, 64), (4096, 16)])
def test_power_cut_at_every_write(micropython_exe, block, blocks):
    # an explicit heap: the 16 x 4096 images outgrow a 32-bit build's default 1 MB heap
    # (the 64-bit runtime's default is 2 MB)
    rc, res, out = _run(micropython_exe, "sweep", 1, block, blocks, heapsize="4M")
    print("\npower-cut sweep, VfsLfs2 %d x %d B: %d writes (%d erases) of a run of %d records "
          "swept, each cut clean and torn (%d flash images powered up), %.1f s"
          % (blocks, block, res["writes"], res["erases"], res["records"],
             2 * res["cuts"] + 1, res["s"]))
    assert res["failures"] == [], res["failures"]
    assert rc == 0 and res["ok"] is True
    assert res["step"] == 1 and res["swept"] == res["writes"] == res["cuts"] == res["torn"]
    assert res["writes"] >= 200 and res["erases"] > 20 and res["records"] >= 100


def test_portable_checks_micropython(micropython_exe):
    rc, res, out = _run(micropython_exe, "unit")
    bad = [r for r in res["results"] if r[2] != "ok"]
    assert not bad, out
    assert rc == 0 and len(res["results"]) == 2 * len(pc.CHECKS)


@pytest.mark.parametrize("check", pc.CHECKS, ids=lambda f: f.__name__)
def test_portable_checks_cpython(tmp_path, check):
    check(str(tmp_path / "log"))


def test_crc_fallback_matches_binascii(monkeypatch):
    import binascii

    import eventlog

    data = bytes(range(256)) * 3
    monkeypatch.setattr(eventlog, "_crc32", None)
    assert eventlog.crc32(data) == binascii.crc32(data)
    assert eventlog.crc32(data[100:], eventlog.crc32(data[:100])) == binascii.crc32(data)
    fr = eventlog.encode(3, 10, None, "WARN", "fault", "0x10", "PLL_LOSS_OF_LOCK", "x")
    monkeypatch.undo()
    assert eventlog.decode(fr)[0] == 3


def test_bad_arguments_and_empty_dir(tmp_path):
    import eventlog

    with pytest.raises(ValueError):
        eventlog.Log(str(tmp_path / "a"), segments=1)
    with pytest.raises(ValueError):
        eventlog.Log(str(tmp_path / "b"), records_per_segment=0)
    assert list(eventlog.scan(str(tmp_path / "missing"))) == []
    assert eventlog.newest_seq(str(tmp_path / "missing")) == 0
    # foreign files in the directory are left alone and ignored
    root = tmp_path / "log"
    root.mkdir()
    (root / "notes.txt").write_text("hello")
    (root / "zzzzzzzz.log").write_text("not a segment")
    log = eventlog.Log(str(root), segments=2, records_per_segment=2)
    for i in range(5):
        log.append((i, "state", "", "S%d" % i, ""))
    assert log.close() is True
    assert [r[6] for r in eventlog.scan(str(root))] == ["S2", "S3", "S4"]
    assert (root / "notes.txt").exists() and (root / "zzzzzzzz.log").exists()


def test_severity_and_lines():
    import eventlog

    assert eventlog.severity_of("fault", "0x07") == "ERROR"
    assert eventlog.severity_of("fault", "0x10") == "WARN"
    assert eventlog.severity_of("trip", "OV2") == "ERROR"
    assert eventlog.severity_of("state", "") == "INFO"
    rec = eventlog.decode(eventlog.encode(9, 61234, None, "ERROR", "trip", "OV2", "OV2",
                                          "v=1.21pu"))
    assert eventlog.line(rec) == "+61.234s ERROR OV2 OV2 v=1.21pu"
