"""Tests of ``v2g.build.wordcheck``, the machine-word checker for viper hot paths.

The toy functions live in ``tests_host/build/wordcheck_samples.py``; every test names the one
hazard it plants and asserts on the specific violation (kind, line, function, value).
Context: host only (CPython).
"""

import importlib
import re
import sys
from array import array
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HOST_TOOLS = HERE.parent.parent / "host_tools"
if str(HOST_TOOLS) not in sys.path:
    sys.path.insert(0, str(HOST_TOOLS))

wordcheck = importlib.import_module("v2g.build.wordcheck")  # after the sys.path setup

SAMPLES = HERE / "wordcheck_samples.py"
SAMPLES_SRC = SAMPLES.read_text().splitlines()
FILE = SAMPLES.name


def line_of(text, func=None):
    """Line number of the first sample line containing ``text`` (after ``def func``)."""
    start = 0
    if func is not None:
        start = next(i for i, s in enumerate(SAMPLES_SRC) if s.startswith(f"def {func}("))
    for i in range(start, len(SAMPLES_SRC)):
        if text in SAMPLES_SRC[i]:
            return i + 1
    raise AssertionError(f"{text!r} not in samples")


@pytest.fixture(scope="module")
def wm():
    return wordcheck.load_viper_module(SAMPLES)


def only(problems, kind):
    found = [p for p in problems if p.kind == kind]
    assert len(found) == 1, [str(p) for p in problems]
    return found[0]


def test_finds_every_viper_function(wm):
    assert "clean_filter" in wm.viper_names
    assert "scale" in wm.viper_names
    assert "plain_helper" not in wm.viper_names


def test_clean_function_passes(wm):
    rep = wm.check("clean_filter", array("i", [1 << 20]), 1000)
    assert rep.ok, str(rep)
    assert rep.value == 375  # (1000 * 3) >> 3
    assert set(rep.runs) == {32, 64, 0}


def test_clean_tick_loop_with_update(wm):
    st = array("i", [1 << 20])  # y = 0
    for _ in range(2000):
        rep = wm.check("clean_filter", st, -30000, update=True)
        assert rep.ok, str(rep)
    assert st[0] - (1 << 20) == rep.value
    assert -30000 <= rep.value < -29990  # settled on the input, within the rounding
    worst = wm.worst_line()
    assert re.fullmatch(rf"worst line {FILE}:\d+ uses 2\*\*\d+\.\d \(\w+\)", worst), worst


def test_augassign_on_ptr_and_global_table_pass(wm):
    rep = wm.check("accumulate", array("i", [5, 0]), 0x1234)
    assert rep.ok, str(rep)
    assert rep.runs[32].arrays[0] == [5 + 0x1234, 0x34]
    rep = wm.check("table_sum", 4)
    assert rep.ok, str(rep)
    assert rep.value == 65835


def test_intermediate_overflowing_32_bits_is_flagged(wm):
    rep = wm.check("mul_shift", 1 << 20, 1 << 20)
    v = only(rep.problems, "range")
    where = f"{FILE}:{line_of('(a * b)')}"
    assert str(v) == f"{where} mul_shift: a * b = 1099511627776 outside +/-2**30"
    assert (v.func, v.value) == ("mul_shift", 1 << 40)
    # The board wraps a*b to 0; the 64-bit host and CPython do not.
    m = only(rep.problems, "mismatch")
    assert m.value == [0, 1 << 24, 1 << 24]
    assert "32-bit board 0, 64-bit host 16777216, CPython 16777216" in m.message


def test_intermediate_beyond_2_30_is_flagged_even_when_runs_agree(wm):
    rep = wm.check("mul_shift", 40000, 40000)  # 1.6e9: a 32-bit word, but over 2**30
    assert [p.kind for p in rep.problems] == ["range"]
    assert rep.problems[0].value == 1600000000
    assert len({repr(r.value) for r in rep.runs.values()}) == 1


def test_in_range_product_passes(wm):
    assert wm.check("mul_shift", 1 << 15, (1 << 15) - 1).ok


def test_argument_outside_range_is_flagged(wm):
    rep = wm.check("mul_shift", 1 << 31, 1)
    (v,) = [p for p in rep.problems if p.message.startswith("argument")]
    where = f"{FILE}:{line_of('def mul_shift')}"
    assert str(v) == f"{where} mul_shift: argument a = 2147483648 outside +/-2**30"
    # On the board the argument arrives as the word -2**31: the product differs too.
    assert only(rep.problems, "mismatch").value == [-32768, 32768, 32768]


def test_negative_word_through_ptr32_is_a_32_64_mismatch(wm):
    rep = wm.check("read_signed", array("i", [-10]))
    load = only(rep.problems, "load")
    assert load.line == line_of("st[0] >> 1")
    assert load.func == "read_signed"
    assert "negative word -10" in load.message and "4294967286" in load.message
    m = only(rep.problems, "mismatch")
    assert m.value == [-5, 2147483643, -5]  # board, 64-bit host, CPython


def test_negative_halfword_through_ptr16_is_flagged(wm):
    rep = wm.check("read_half", array("h", [7, -5]), 1)
    assert "negative word -5" in only(rep.problems, "load").message
    assert only(rep.problems, "mismatch").value == [65531, 65531, -5]
    assert wm.check("read_half", array("H", [7, 65531]), 1).ok  # unsigned table: fine


def test_ptr_width_differing_from_array_items_is_flagged(wm):
    rep = wm.check("read_half", array("i", [1, 2]), 0)
    v = only(rep.problems, "ptr")
    assert v.message.startswith("argument buf: ptr16 over array('i') with 4-byte items")


def test_constant_2_31_is_flagged_at_load(wm):
    (lit,) = [v for v in wm.load_violations if v.func == "big_literal"]
    assert str(lit) == (
        f"{FILE}:{line_of('0x80000000')} big_literal: constant 0x80000000 = 2147483648 "
        "outside +/-2**30"
    )
    (cst,) = [v for v in wm.load_violations if v.func == "big_const"]
    assert cst.kind == "const" and cst.value == 1 << 31
    assert cst.line == line_of("x + _BIG")
    assert "_BIG = 2147483648" in cst.message
    # check() of the function reports its load-time violation too, and the run-time sum.
    rep = wm.check("big_const", 1)
    assert {p.kind for p in rep.problems} >= {"const", "range"}


def test_load_violations_only_reported_for_functions_run(wm):
    assert wm.check("clean_filter", array("i", [1 << 20]), 1).ok
    assert not [v for v in wm.load_violations if v.func in ("min_const", "clean_filter")]


def test_minus_2_30_is_allowed(wm):
    assert not [v for v in wm.load_violations if v.func == "min_const"]
    assert wm.check("min_const", 5).ok
    assert wm.check("min_const", -(1 << 30) + 1).ok
    assert wm.check("min_const", -(1 << 30) - 1).kinds() == {"range"}  # the argument


def test_shift_by_40_is_flagged(wm):
    rep = wm.check("shift_far", 0)  # all three return 0: only the rule catches it
    v = only(rep.problems, "shift")
    where = f"{FILE}:{line_of('x << 40')}"
    assert str(v) == f"{where} shift_far: x << 40: shift count 40 outside [0, 32)"
    rep = wm.check("shift_far", 1)
    assert only(rep.problems, "mismatch").value == [256, 1 << 40, 1 << 40]


def test_unrepresentable_store_is_flagged(wm):
    rep = wm.check("store_half", array("H", [0]), 70000)
    v = only(rep.problems, "store")
    assert v.line == line_of("buf[0] = v")
    assert "stores 70000 into array('H'), which holds 0..65535" in v.message
    assert rep.runs[32].arrays[0] == [70000 & 0xFFFF]  # viper keeps the low bits
    assert isinstance(rep.runs[0].error, OverflowError)  # CPython refuses


def test_negative_index_is_a_fault(wm):
    rep = wm.check("index_at", array("i", [1, 2, 3]), -1)
    v = only(rep.problems, "index")
    assert v.message == "st[i]: index -1 outside 0..2"
    assert isinstance(rep.runs[32].error, wordcheck.WordFault)
    assert rep.runs[0].value == 3  # CPython silently reads the last element


def test_floor_division_agrees_and_zero_divisor_faults(wm):
    assert wm.check("div", -7, 2).ok
    rep = wm.check("div", 7, 0)
    assert rep.problems[0].kind == "divzero"
    assert rep.problems[0].func == "div"


def test_call_into_other_viper_function_is_checked(wm):
    st = array("i", [100, 200, 300])
    rep = wm.check("scale_sum", st, 3)
    assert rep.ok, str(rep)
    assert rep.value == 75 + 150 + 225
    assert st.tolist() == [100, 200, 300]  # runs work on copies
    inner = line_of("(x * 3) >> 2")
    assert any(where == f"{FILE}:{inner}" for where, _, _ in wm.headroom())
    # An overflow inside the callee is reported against the callee's own line.
    rep = wm.check("scale_sum", array("i", [1 << 29, 0]), 1)
    v = only(rep.problems, "range")
    assert (v.func, v.line, v.value) == ("scale", inner, 3 << 29)
    assert v.message == "x * 3 = 1610612736 outside +/-2**30"


def test_run_copies_and_models_each_runtime(wm):
    st = array("i", [-10])
    value, arrays = wm.run("read_signed", st, word_bits=64)
    assert value == 2147483643 and arrays == ([-10],)
    assert wm.run("read_signed", st, word_bits=32).value == -5
    assert wm.run("read_signed", st, word_bits=0).value == -5
    res = wm.run("accumulate", st, 3, word_bits=32)
    assert isinstance(res.error, wordcheck.WordFault)  # st has one word, accumulate needs 2
    assert st.tolist() == [-10]


def test_check_calls_helper():
    problems = wordcheck.check_calls(
        SAMPLES, [("clean_filter", (array("i", [1 << 20]), 7)), ("shift_far", (0,))]
    )
    assert [p.kind for p in problems] == ["shift"]


def test_violations_are_counted_per_site():
    wm = wordcheck.load_viper_module(SAMPLES)
    for _ in range(3):
        wm.check("mul_shift", 40000, 40000)
    (v,) = [v for v in wm.violations() if v.kind == "range"]
    assert v.count == 3 and str(v).endswith("(x3)")
    wm.reset()
    assert not [v for v in wm.violations() if v.kind == "range"]
