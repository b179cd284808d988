"""Machine-word checker for ``@micropython.viper`` hot paths, run under CPython.

A viper hot path runs in three places: on 32-bit boards (ints are 32-bit words that
wrap), on the 64-bit MicroPython unix runtime (64-bit words; ``ptr32``/``ptr16``/``ptr8``
loads zero-extend, so a stored -5 reads back as 4294967291 through ``ptr32``) and under
CPython through the ``micropython`` shim (unbounded ints). The project rule is that every
intermediate, argument and constant of a hot path stays within [-2**30, 2**30), so the
three agree bit for bit. This module proves it for the inputs a test feeds in.

How: the module source is parsed and every viper function (decorated ``@micropython.viper``
or ``@viper``) is rewritten so that each ``+ - * // % << >> & | ^``, augmented
assignment, unary ``-``/``~``, ``int()``/``uint()`` cast, ``ptr8/ptr16/ptr32()`` cast and
subscript load/store through a ptr-typed name (an argument annotated ``ptr32`` etc. or a
local assigned from ``ptr32(x)``) calls a small semantic function. The rewritten module is
compiled once and executed in two namespaces, one with 32-bit board semantics and one with
64-bit host semantics; the untouched module runs in a third (plain CPython). Calls between
viper functions of the module resolve through the namespace, so the whole call tree is
instrumented; other functions run plainly. Constant sub-expressions (literals and
``const()`` names, which MicroPython folds at compile time) are checked at load time and
left alone at run time.

32-bit board semantics (the strict run, where violations are recorded):
  * every intermediate result and every int argument outside [-2**30, 2**30) is a
    violation; the value then wraps to 32 bits (two's complement) and the run goes on;
  * a shift count outside [0, 32) is a violation (the count is then taken mod 32);
  * ``ptr32`` loads are signed 32-bit, ``ptr16``/``ptr8`` loads zero-extend (as viper
    does); loading a word that reads differently on the 64-bit host (a negative word
    through ``ptr32``, or a negative element of a signed ``array('h')``/``array('b')``
    through ``ptr16``/``ptr8``) is a violation;
  * storing a value the array's element type cannot hold is a violation (the low bits
    are stored, as viper does); a ptr whose width differs from the array's item size is
    a violation (CPython would index elements, viper indexes words);
  * an index outside the array, or ``//``/``%`` by zero, is fatal (``WordFault``);
  * ``uint()`` of a negative value is a violation.
64-bit host semantics: results wrap at 64 bits, shift counts are taken mod 64, every ptr
load zero-extends, stores keep the low bits; nothing is recorded, differences show up in
the comparison. Load time: int literals, folded constant expressions, ``const()`` names
and module-level int globals used in a viper function, outside [-2**30, 2**30), and the
operators ``/`` and non-constant ``**``, are violations.

Usage::

    from v2g.build import wordcheck
    wm = wordcheck.load_viper_module("firmware/pll.py")
    rep = wm.check("step", st, 100, -50, -50, update=True)   # 32-bit / 64-bit / CPython
    assert rep.ok, str(rep)              # lines like "pll.py:123 step: a*b = ... outside"
    value, arrays = wm.run("step", st, 1, 2, 3, word_bits=64)  # one run; args are copied
    print(wm.worst_line())               # "worst line pll.py:140 uses 2**29.3 (step)"
    problems = wordcheck.check_calls("firmware/pll.py", [("step", (st, 1, 2, 3))])

``run`` and ``check`` copy every array (and other mutable) argument per run, so runs never
interfere and the caller's objects stay untouched; ``check(..., update=True)`` copies the
CPython run's final array contents back into the caller's arrays, for tick loops.
Violations are de-duplicated per source site and counted; ``WordModule.violations()``
lists everything seen so far, ``WordModule.headroom()`` the largest |intermediate| seen
per source line.

Limitations: the inputs decide what is proven (the checker runs the code, it does not
bound it); pointer arithmetic (``ptr32(int(buf) + 4)``) and ptrs to raw addresses are not
supported; ``uint`` values are modelled as plain ints (a negative one is flagged, so
unsigned compares and shifts of in-range values agree); a ptr-typed name is recognised
only as an annotated argument or a local assigned from a ptr cast; module-level state
(including arrays referenced as globals) lives in three separate namespaces, except
objects imported from other modules, which are shared. It is no type checker: what the
viper compiler rejects (e.g. arithmetic on a viper call's result without ``int()``) runs
fine here, so run the module on the unix runtime too.

Context: host only (CPython, tests and tools). Never copied to a board.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import itertools
import math
import sys
import types
from array import array
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SHIM_DIR = Path(__file__).resolve().parent / "shim"

LIMIT = 1 << 30  # every intermediate must lie in [-LIMIT, LIMIT)
MODES = (32, 64, 0)  # 32-bit board, 64-bit host, plain CPython (0)
MODE_NAMES = {32: "32-bit board", 64: "64-bit host", 0: "CPython"}
PTR_BITS = {"ptr8": 8, "ptr16": 16, "ptr32": 32}

_BINOPS = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.FloorDiv: "floordiv",
    ast.Mod: "mod",
    ast.LShift: "lshift",
    ast.RShift: "rshift",
    ast.BitAnd: "and",
    ast.BitOr: "or",
    ast.BitXor: "xor",
}
_FOLD = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.LShift: lambda a, b: a << b if b < 4096 else None,
    ast.RShift: lambda a, b: a >> b,
    ast.BitAnd: lambda a, b: a & b,
    ast.BitOr: lambda a, b: a | b,
    ast.BitXor: lambda a, b: a ^ b,
    ast.Pow: lambda a, b: a**b if 0 <= b < 256 else None,
}
_FOLD_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a, ast.Invert: lambda a: ~a}
_PREFIX = "_wc_"  # names injected into the instrumented namespaces


class WordFault(Exception):
    """A fatal machine-level fault: out-of-bounds ptr index, division by zero."""


class WordCheckError(AssertionError):
    """Raised by ``CheckReport.raise_for_problems``; the message lists every problem."""


@dataclass
class Violation:
    """One problem: ``str()`` gives ``file:line func: message``.

    ``kind`` is one of ``range``, ``shift``, ``load``, ``store``, ``index``, ``ptr``,
    ``uint``, ``divzero``, ``const``, ``operator`` (rule violations), ``mismatch`` (the
    three runs disagree) or ``error`` (a run raised).
    """

    kind: str
    file: str
    line: int
    func: str
    message: str
    value: object = None
    count: int = 1

    @property
    def where(self):
        return f"{self.file}:{self.line}"

    def __str__(self):
        more = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.file}:{self.line} {self.func}: {self.message}{more}"


@dataclass(frozen=True)
class _Site:
    file: str
    line: int
    func: str
    src: str


def _signed(raw, bits):
    return raw - (1 << bits) if raw >> (bits - 1) else raw


def _describe(site, kind, value, info):
    """Message text for a run-time violation at ``site``."""
    src = site.src
    if kind == "range":
        return f"{src} = {value} outside +/-2**30"
    if kind == "shift":
        return f"{src}: shift count {value} outside [0, {info})"
    if kind == "index":
        return f"{src}: index {value} outside 0..{info - 1}"
    if kind == "divzero":
        return f"{src}: division by zero"
    if kind == "uint":
        return f"{src}: uint() of negative value {value}"
    if kind == "load":
        width, tc = info
        if tc not in "bhilq":  # an unsigned element with the top bit set
            return (
                f"{src}: ptr{width} load of {value} from array('{tc}') has bit {width - 1} "
                f"set (a 32-bit board reads {_signed(value, width)})"
            )
        return (
            f"{src}: ptr{width} load of negative word {_signed(value, width)} from "
            f"array('{tc}') (zero-extended to {value} on the 64-bit host)"
        )
    if kind == "store":
        tc, lo, hi = info
        return f"{src}: stores {value} into array('{tc}'), which holds {lo}..{hi - 1}"
    if kind == "ptr":
        width, tc, itemsize = info
        return (
            f"{src}: ptr{width} over array('{tc}') with {itemsize}-byte items "
            "(viper indexes words, CPython indexes elements)"
        )
    return f"{src}: {kind} {value}"


class _Recorder:
    """Violations and per-site peaks of one instrumented namespace."""

    def __init__(self, nsites):
        self.peak = [0] * nsites
        self.hits = {}  # (site, kind) -> [count, first value, info], all runs
        self.run_hits = {}  # same, current run only
        self.entered = set()  # viper functions entered in the current run

    def begin(self):
        self.run_hits = {}
        self.entered = set()

    def violate(self, site, kind, value, info=None):
        key = (site, kind)
        for table in (self.run_hits, self.hits):
            hit = table.get(key)
            if hit is None:
                table[key] = [1, value, info]
            else:
                hit[0] += 1


class Ptr:
    """A viper pointer over a buffer: ``mv`` views its bytes as unsigned words."""

    __slots__ = ("hi", "itemsize", "lo", "mask", "mv", "n", "obj", "signed", "tc", "top", "width")

    def __init__(self, obj, width):
        if isinstance(obj, Ptr):
            obj = obj.obj
        if isinstance(obj, array):
            tc, itemsize = obj.typecode, obj.itemsize
        elif isinstance(obj, (bytes, bytearray)):
            tc, itemsize = "B", 1
        elif isinstance(obj, memoryview):
            tc, itemsize = obj.format, obj.itemsize
        else:
            raise TypeError(
                f"wordcheck: ptr{width}() of {type(obj).__name__} is not supported "
                "(pass an array, bytearray or memoryview)"
            )
        nbytes = width // 8
        raw = memoryview(obj).cast("B")
        self.obj = obj
        self.n = len(raw) // nbytes
        self.mv = raw[: self.n * nbytes].cast(_UCODE[nbytes])
        self.width = width
        self.mask = (1 << width) - 1
        self.top = 1 << (width - 1)
        self.tc = tc
        self.itemsize = itemsize
        self.signed = tc in "bhilq"
        if itemsize * 8 != width:
            self.lo, self.hi = -self.top, 1 << width
        elif self.signed:
            self.lo, self.hi = -self.top, self.top
        else:
            self.lo, self.hi = 0, 1 << width

    @property
    def same_width(self):
        return self.itemsize * 8 == self.width

    # A ptr handed on to a function outside the instrumented module (another firmware
    # module's viper step, checked on its own) behaves as the buffer it points at.
    def __getitem__(self, i):
        return self.obj[i]

    def __setitem__(self, i, v):
        self.obj[i] = v

    def __len__(self):
        return len(self.obj)


def _ucode(nbytes):
    for code in "BHILQ":
        if array(code).itemsize == nbytes:
            return code
    raise RuntimeError(f"no unsigned array typecode of {nbytes} bytes")


_UCODE = {n: _ucode(n) for n in (1, 2, 4)}


class _Accessor:
    """``_wc_at(p, site)[i] = v`` for ptr stores inside tuple or chained assignments."""

    __slots__ = ("load", "p", "site", "store")

    def __init__(self, p, site, load, store):
        self.p, self.site, self.load, self.store = p, site, load, store

    def __getitem__(self, i):
        return self.load(self.p, i, self.site)

    def __setitem__(self, i, v):
        self.store(self.p, i, v, self.site)


def _make_ops(bits, rec):
    """Semantic functions for one namespace; ``rec`` is None for the 64-bit host."""
    strict = rec is not None
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    lo, hi = -LIMIT, LIMIT
    peak = rec.peak if strict else None
    violate = rec.violate if strict else None

    if strict:

        def fix(r, site):
            if 0 <= r < hi:
                if r > peak[site]:  # noqa: PLR1730 - max() costs a call per operation
                    peak[site] = r
                return r
            if lo <= r < 0:
                if -r > peak[site]:  # noqa: PLR1730
                    peak[site] = -r
                return r
            if not isinstance(r, int):
                return r  # a float or an object: not a machine word
            peak[site] = max(peak[site], r if r >= 0 else -r)
            violate(site, "range", r)
            if -half <= r < half:
                return r
            return ((r + half) & mask) - half

    else:

        def fix(r, site):
            if -half <= r < half or not isinstance(r, int):
                return r
            return ((r + half) & mask) - half

    def count(b, site):
        if 0 <= b < bits:
            return b
        if strict:
            violate(site, "shift", b, bits)
        return b & (bits - 1)

    def divisor(b, site):
        if b == 0:
            if strict:
                violate(site, "divzero", b)
            raise WordFault("integer division by zero (a viper board faults)")

    ops = {
        "add": lambda a, b, site: fix(a + b, site),
        "sub": lambda a, b, site: fix(a - b, site),
        "mul": lambda a, b, site: fix(a * b, site),
        "and": lambda a, b, site: fix(a & b, site),
        "or": lambda a, b, site: fix(a | b, site),
        "xor": lambda a, b, site: fix(a ^ b, site),
        "lshift": lambda a, b, site: fix(a << count(b, site), site),
        "rshift": lambda a, b, site: fix(a >> count(b, site), site),
        "neg": lambda a, site: fix(-a, site),
        "inv": lambda a, site: fix(~a, site),
    }

    def floordiv(a, b, site):
        divisor(b, site)
        return fix(a // b, site)

    def mod(a, b, site):
        divisor(b, site)
        return fix(a % b, site)

    def int_(x, site):
        if isinstance(x, Ptr):
            raise TypeError("wordcheck: int() of a ptr (pointer arithmetic) is not supported")
        return fix(x if type(x) is int else int(x), site)

    def uint_(x, site):
        x = int_(x, site)
        if strict and x < 0:
            violate(site, "uint", x)
        return x

    def arg(x, site):
        if type(x) is int:
            return fix(x, site)
        return x  # objects (arrays, floats, None) pass unchanged

    def ptr(obj, width, site):
        p = Ptr(obj, width)
        if strict and not p.same_width:
            violate(site, "ptr", width, (width, p.tc, p.itemsize))
        return p

    def bounds(p, i, site):
        if not 0 <= i < p.n:
            if strict:
                violate(site, "index", i, p.n)
            raise WordFault(f"ptr{p.width} index {i} outside 0..{p.n - 1}")

    if strict and bits == 32:

        def load(p, i, site):
            if type(p) is not Ptr:
                return fix(p[i], site)
            bounds(p, i, site)
            raw = p.mv[i]
            if raw >= p.top and (p.width == 32 or p.signed):
                violate(site, "load", raw, (p.width, p.tc))
            if p.width == 32 and raw >= p.top:
                raw -= 1 << 32
            return fix(raw, site)

    else:

        def load(p, i, site):
            if type(p) is not Ptr:
                return fix(p[i], site)
            bounds(p, i, site)
            return p.mv[i]  # zero-extended, always within 64 bits

    def store(p, i, v, site):
        if type(p) is not Ptr:
            p[i] = v
            return
        bounds(p, i, site)
        if strict and not p.lo <= v < p.hi:
            violate(site, "store", v, (p.tc, p.lo, p.hi))
        p.mv[i] = v & p.mask

    def aug(p, i, op, v, site):
        store(p, i, op(load(p, i, site), v, site), site)

    def aug_item(obj, i, op, v, site):
        obj[i] = op(obj[i], v, site)

    def aug_attr(obj, name, op, v, site):
        setattr(obj, name, op(getattr(obj, name), v, site))

    def at(p, site):
        return _Accessor(p, site, load, store)

    if strict:

        def enter(name):
            rec.entered.add(name)

    else:

        def enter(name):
            return None

    ops.update(
        floordiv=floordiv,
        mod=mod,
        int=int_,
        uint=uint_,
        arg=arg,
        ptr=ptr,
        load=load,
        store=store,
        aug=aug,
        aug_item=aug_item,
        aug_attr=aug_attr,
        at=at,
        enter=enter,
    )
    return {_PREFIX + name: fn for name, fn in ops.items()}


def _is_viper(decorator):
    if isinstance(decorator, ast.Name):
        return decorator.id == "viper"
    return (
        isinstance(decorator, ast.Attribute)
        and decorator.attr == "viper"
        and isinstance(decorator.value, ast.Name)
        and decorator.value.id == "micropython"
    )


def _ptr_width(annotation):
    """Width of a ``ptr32``/``ptr16``/``ptr8`` annotation or cast name, else None."""
    if isinstance(annotation, ast.Name):
        return PTR_BITS.get(annotation.id)
    if isinstance(annotation, ast.Attribute):
        return PTR_BITS.get(annotation.attr)
    return None


def _ptr_cast(node):
    """Width if ``node`` is a call ``ptr32(x)`` etc. (original or rewritten), else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name) and func.id == _PREFIX + "ptr":
        return node.args[1].value
    return _ptr_width(func) if len(node.args) == 1 else None


def _local_names(func):
    names = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    declared_global = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared_global.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node is not func:
                names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names - declared_global


class _FuncRewriter(ast.NodeTransformer):
    """Rewrites the body of one viper function; see the module docstring."""

    def __init__(self, loader, func):
        self.loader = loader
        self.func = func
        self.name = func.name
        self.locals = _local_names(func)
        self.ptrs = {}
        for a in itertools.chain(func.args.posonlyargs, func.args.args, func.args.kwonlyargs):
            width = _ptr_width(a.annotation)
            if width:
                self.ptrs[a.arg] = width
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and _ptr_cast(node.value):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        self.ptrs[t.id] = _ptr_cast(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                width = _ptr_width(node.annotation) or (node.value and _ptr_cast(node.value))
                if width:
                    self.ptrs[node.target.id] = width
        self.flagged_names = set()

    # -- helpers ---------------------------------------------------------------------

    def site(self, node, src=None):
        return self.loader.new_site(node, self.name, src)

    def call(self, op, args, node, src=None):
        site = ast.Constant(self.site(node, src))
        new = ast.Call(ast.Name(_PREFIX + op, ast.Load()), [*args, site], [])
        return ast.copy_location(new, node)

    def is_ptr(self, node):
        if isinstance(node, ast.Name):
            return node.id in self.ptrs
        return _ptr_cast(node) is not None

    def fold(self, node):
        """Value of a constant expression MicroPython folds at compile time, else None."""
        if isinstance(node, ast.Constant):
            return node.value if type(node.value) is int else None
        if isinstance(node, ast.Name):
            if node.id in self.loader.consts and node.id not in self.locals:
                return self.loader.consts[node.id]
            return None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _FOLD_UNARY:
            v = self.fold(node.operand)
            return None if v is None else _FOLD_UNARY[type(node.op)](v)
        if isinstance(node, ast.BinOp) and type(node.op) in _FOLD:
            left, right = self.fold(node.left), self.fold(node.right)
            if left is None or right is None:
                return None
            try:
                return _FOLD[type(node.op)](left, right)
            except (ArithmeticError, ValueError):
                return None
        return None

    def check_const(self, node):
        """Flag the innermost constant (sub)expression outside the range; True if any."""
        inner = False
        if isinstance(node, ast.BinOp):
            inner = self.check_const(node.left) | self.check_const(node.right)
        elif isinstance(node, ast.UnaryOp):
            if isinstance(node.operand, ast.Constant):
                # "-1073741824" is one literal to the programmer; check the signed value.
                return self.flag_const(node, self.fold(node))
            inner = self.check_const(node.operand)
        if inner:
            return True
        return self.flag_const(node, self.fold(node))

    def flag_const(self, node, value):
        if value is None or -LIMIT <= value < LIMIT:
            return False
        src = self.loader.source_of(node)
        if isinstance(node, ast.Name):
            if node.id in self.flagged_names:
                return True
            self.flagged_names.add(node.id)
            what = "const()" if node.id in self.loader.consts else "module global"
            msg = f"{what} {src} = {value} outside +/-2**30"
        elif src.lstrip("-+~ ") == str(abs(value)) or src == str(value):
            msg = f"constant {src} outside +/-2**30"
        else:
            msg = f"constant {src} = {value} outside +/-2**30"
        self.loader.load_violation("const", node, self.name, msg, value)
        return True

    # -- visitors --------------------------------------------------------------------

    def visit_FunctionDef(self, node):
        if node is not self.func:
            return self.generic_visit(node)  # nested function: instrument its body too
        self.generic_visit(node)
        entry = [ast.Expr(self.call_enter(node))]
        for a in itertools.chain(node.args.posonlyargs, node.args.args, node.args.kwonlyargs):
            width = _ptr_width(a.annotation)
            if width:
                args = [ast.Name(a.arg, ast.Load()), ast.Constant(width)]
                value = self.call("ptr", args, a, f"argument {a.arg}")
            else:
                value = self.call("arg", [ast.Name(a.arg, ast.Load())], a, f"argument {a.arg}")
            entry.append(ast.copy_location(ast.Assign([ast.Name(a.arg, ast.Store())], value), a))
        for stmt in entry:
            ast.copy_location(stmt, node.body[0])
        body = node.body
        docstring = (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        node.body = body[:1] + entry + body[1:] if docstring else entry + body
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def call_enter(self, node):
        new = ast.Call(ast.Name(_PREFIX + "enter", ast.Load()), [ast.Constant(self.name)], [])
        return ast.copy_location(new, node)

    def visit_Constant(self, node):
        if type(node.value) is int:
            self.flag_const(node, node.value)
        return node

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id not in self.locals:
            value = self.loader.globals_.get(node.id)
            if type(value) is int:
                self.flag_const(node, value)
        return node

    def visit_BinOp(self, node):
        if self.fold(node) is not None:
            self.check_const(node)
            return node
        src = self.loader.source_of(node)
        if isinstance(node.op, ast.Div):
            msg = f"{src}: '/' is not a viper integer operation (use //)"
            self.loader.load_violation("operator", node, self.name, msg, None)
        elif isinstance(node.op, ast.Pow):
            msg = f"{src}: '**' of non-constant operands is not a viper integer operation"
            self.loader.load_violation("operator", node, self.name, msg, None)
        self.generic_visit(node)
        op = _BINOPS.get(type(node.op))
        if op is None:
            return node
        return self.call(op, [node.left, node.right], node, src)

    def visit_UnaryOp(self, node):
        if self.fold(node) is not None:
            self.check_const(node)
            return node
        src = self.loader.source_of(node)
        self.generic_visit(node)
        if isinstance(node.op, ast.USub):
            return self.call("neg", [node.operand], node, src)
        if isinstance(node.op, ast.Invert):
            return self.call("inv", [node.operand], node, src)
        return node

    def visit_Call(self, node):
        src = self.loader.source_of(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) and func.id not in self.locals else None
        self.generic_visit(node)
        if name is None or len(node.args) != 1 or node.keywords:
            return node
        if name in ("int", "uint"):
            return self.call(name, node.args, node, src)
        if name in PTR_BITS:
            return self.call("ptr", [node.args[0], ast.Constant(PTR_BITS[name])], node, src)
        return node

    def visit_Subscript(self, node):
        if not self.is_ptr(node.value):
            return self.generic_visit(node)
        src = self.loader.source_of(node)
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            return self.call("load", [node.value, node.slice], node, src)
        if isinstance(node.ctx, ast.Store):
            node.value = self.call("at", [node.value], node, src)
        return node

    def visit_Assign(self, node):
        target = node.targets[0]
        if (
            len(node.targets) == 1
            and isinstance(target, ast.Subscript)
            and self.is_ptr(target.value)
        ):
            src = self.loader.source_of(target)
            args = [self.visit(target.value), self.visit(target.slice), self.visit(node.value)]
            return ast.copy_location(ast.Expr(self.call("store", args, target, src)), node)
        return self.generic_visit(node)

    def visit_AugAssign(self, node):
        op = _BINOPS.get(type(node.op))
        if op is None:
            return self.generic_visit(node)
        src = self.loader.source_of(node)
        value = self.visit(node.value)
        target = node.target
        if isinstance(target, ast.Name):
            self.visit(target)
            new_value = self.call(op, [ast.Name(target.id, ast.Load()), value], node, src)
            return ast.copy_location(
                ast.Assign([ast.Name(target.id, ast.Store())], new_value), node
            )
        opfn = ast.Name(_PREFIX + op, ast.Load())
        if isinstance(target, ast.Subscript):
            kind = "aug" if self.is_ptr(target.value) else "aug_item"
            args = [self.visit(target.value), self.visit(target.slice), opfn, value]
        elif isinstance(target, ast.Attribute):
            kind = "aug_attr"
            args = [self.visit(target.value), ast.Constant(target.attr), opfn, value]
        else:
            return self.generic_visit(node)
        return ast.copy_location(ast.Expr(self.call(kind, args, node, src)), node)


class _ModuleRewriter(ast.NodeTransformer):
    def __init__(self, loader):
        self.loader = loader
        self.names = []

    def visit_FunctionDef(self, node):
        if any(_is_viper(d) for d in node.decorator_list):
            self.names.append(node.name)
            return _FuncRewriter(self.loader, node).visit(node)
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef


def _const_names(tree):
    """Module-level names assigned from ``const(...)``."""
    names = set()
    for node in tree.body:
        value = getattr(node, "value", None)
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or not isinstance(value, ast.Call):
            continue
        func = value.func
        if (isinstance(func, ast.Name) and func.id == "const") or (
            isinstance(func, ast.Attribute) and func.attr == "const"
        ):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


_module_ids = itertools.count()


def _ensure_shim():
    shim = str(SHIM_DIR)
    if shim not in sys.path:
        sys.path.insert(0, shim)
    importlib.import_module("micropython")  # installs ptr8/ptr16/ptr32/uint builtins


def _copy_arg(a):
    if a is None or isinstance(a, (int, float, str, bytes, complex, types.FunctionType)):
        return a
    if isinstance(a, array):
        return array(a.typecode, a)
    if isinstance(a, memoryview):  # a part of a larger array (tick.Control's block)
        return array(a.format, a.tolist())
    if isinstance(a, bytearray):
        return bytearray(a)
    return copy.deepcopy(a)


def _contents(a):
    if isinstance(a, array):
        return a.tolist()
    if isinstance(a, (bytearray, list)):
        return list(a)
    return None


@dataclass
class RunResult:
    """One run: ``value, arrays = result`` unpacks the return value and array contents.

    ``args`` are the per-run copies after the call; ``arrays`` their contents as lists
    (None for non-buffer arguments); ``error`` the exception the call raised, if any;
    ``violations`` those recorded during this run (32-bit board run only).
    """

    mode: int
    value: object
    args: tuple
    error: BaseException | None = None
    violations: list = field(default_factory=list)

    @property
    def arrays(self):
        return tuple(_contents(a) for a in self.args)

    def __iter__(self):
        return iter((self.value, self.arrays))


@dataclass
class CheckReport:
    """Result of ``WordModule.check``: ``ok`` when no problem; ``str()`` lists them."""

    func: str
    runs: dict
    problems: list

    @property
    def ok(self):
        return not self.problems

    @property
    def value(self):
        return self.runs[0].value

    def kinds(self):
        return {p.kind for p in self.problems}

    def raise_for_problems(self):
        if self.problems:
            raise WordCheckError(str(self))

    def __str__(self):
        if not self.problems:
            return f"{self.func}: ok"
        return "\n".join(str(p) for p in self.problems)


class WordModule:
    """A viper module loaded three ways; see the module docstring.

    Attributes: ``path``, ``viper_names`` (the instrumented functions),
    ``load_violations`` (constant and operator problems found at load time).
    """

    def __init__(self, path):
        _ensure_shim()
        self.path = Path(path).resolve()
        self.file = self.path.name
        self.source = self.path.read_text()
        self._sites = []
        self.load_violations = []
        tree = ast.parse(self.source, str(self.path))
        plain = self._exec(compile(tree, str(self.path), "exec"), "cpython", {})
        self.globals_ = plain
        const_names = _const_names(tree)
        self.consts = {k: v for k, v in plain.items() if k in const_names and type(v) is int}
        rewriter = _ModuleRewriter(self)
        tree = ast.fix_missing_locations(rewriter.visit(tree))
        self.viper_names = tuple(rewriter.names)
        self.instrumented_source = ast.unparse(tree)
        code = compile(tree, str(self.path), "exec")
        self._rec = {32: _Recorder(len(self._sites)), 64: None}
        self._ns = {0: plain}
        for bits in (32, 64):
            self._ns[bits] = self._exec(code, f"w{bits}", _make_ops(bits, self._rec[bits]))
        self._rec[32].begin()  # forget anything recorded while the module body ran

    # -- loading ---------------------------------------------------------------------

    def _exec(self, code, tag, inject):
        name = f"_wordcheck_{self.path.stem}_{tag}_{next(_module_ids)}"
        mod = types.ModuleType(name)
        mod.__file__ = str(self.path)
        mod.__dict__.update(inject)
        sys.modules[name] = mod
        folder = str(self.path.parent)
        added = folder not in sys.path
        if added:
            sys.path.insert(1, folder)
        try:
            exec(code, mod.__dict__)  # noqa: S102 - loading the module under test
        finally:
            if added:
                sys.path.remove(folder)
        return mod.__dict__

    def source_of(self, node):
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        return " ".join(text.split())

    def new_site(self, node, func, src=None):
        if src is None:
            src = self.source_of(node)
        self._sites.append(_Site(self.file, getattr(node, "lineno", 0), func, src))
        return len(self._sites) - 1

    def load_violation(self, kind, node, func, message, value):
        self.load_violations.append(Violation(kind, self.file, node.lineno, func, message, value))

    # -- running ---------------------------------------------------------------------

    def function(self, name, word_bits=32):
        """The function ``name`` (dotted for methods) as compiled for ``word_bits``."""
        obj = self._ns[word_bits].get(name.split(".")[0])
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
        if obj is None:
            raise KeyError(f"{self.file} has no function {name!r}")
        return obj

    def run(self, func_name, *args, word_bits=32):
        """Call ``func_name(*args)`` once with ``word_bits`` 32 (board), 64 (host) or 0
        (plain CPython) semantics, on copies of the arguments. Returns a ``RunResult``;
        an exception raised by the call is caught into ``RunResult.error``."""
        if word_bits not in self._ns:
            raise ValueError(f"word_bits must be one of 32, 64, 0, not {word_bits!r}")
        fn = self.function(func_name, word_bits)
        rec = self._rec.get(word_bits)
        args = tuple(_copy_arg(a) for a in args)
        if rec is not None:
            rec.begin()
        value = error = None
        try:
            value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported; the three runs are compared
            error = exc
        violations = self._violations(rec.run_hits) if rec is not None else []
        return RunResult(word_bits, value, args, error, violations)

    def check(self, func_name, *args, update=False):
        """Run ``func_name(*args)`` under 32-bit board, 64-bit host and CPython semantics
        and report rule violations (32-bit run), load-time violations of the viper
        functions entered, exceptions, and any difference in return value or final
        array contents. With ``update=True`` the CPython run's final contents are
        written back into the caller's arrays/bytearrays/lists (for tick loops)."""
        runs = {bits: self.run(func_name, *args, word_bits=bits) for bits in MODES}
        entered = self._rec[32].entered
        problems = [v for v in self.load_violations if v.func in entered]
        problems += runs[32].violations
        problems += self._compare(func_name, runs)
        if update and runs[0].error is None:
            for orig, new in zip(args, runs[0].args, strict=True):
                if isinstance(orig, (array, bytearray, list)):
                    orig[:] = new
                elif isinstance(orig, memoryview):
                    orig[:] = array(orig.format, new)
        return CheckReport(func_name, runs, problems)

    def check_calls(self, calls):
        """``check`` each ``(func_name, args)`` in turn; return the distinct problems."""
        seen = {}
        for func_name, args in calls:
            for p in self.check(func_name, *args).problems:
                seen.setdefault(str(p), p)
        return list(seen.values())

    def _compare(self, func_name, runs):
        problems = []
        fn = self.function(func_name, 0)
        code = getattr(fn, "__code__", None)
        line = code.co_firstlineno if code else 0
        name = func_name

        def problem(kind, message, value=None):
            problems.append(Violation(kind, self.file, line, name, message, value))

        for bits in MODES:
            err = runs[bits].error
            if err is not None:
                problem("error", f"{MODE_NAMES[bits]} run raised {type(err).__name__}: {err}", err)
        if any(runs[bits].error is not None for bits in MODES):
            return problems
        values = [runs[bits].value for bits in MODES]
        if not _all_equal(values):
            problem("mismatch", "return value differs: " + _triple(values), values)
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            params = []
        contents = [runs[bits].arrays for bits in MODES]
        for k, triple in enumerate(zip(*contents, strict=True)):
            if triple[0] is None or _all_equal(triple):
                continue
            label = f"argument {params[k]}" if k < len(params) else f"argument {k}"
            diffs = [i for i, t in enumerate(zip(*triple, strict=False)) if not _all_equal(t)]
            if not diffs and len({len(t) for t in triple}) > 1:
                problem("mismatch", f"{label}: length differs after the call")
            for i in diffs[:4]:
                vals = [t[i] for t in triple]
                problem("mismatch", f"{label}[{i}] differs after the call: {_triple(vals)}")
            if len(diffs) > 4:
                problem("mismatch", f"{label}: {len(diffs) - 4} more elements differ")
        return problems

    # -- reporting -------------------------------------------------------------------

    def _violations(self, hits):
        out = []
        for (site_idx, kind), (count, value, info) in hits.items():
            site = self._sites[site_idx]
            message = _describe(site, kind, value, info)
            out.append(Violation(kind, site.file, site.line, site.func, message, value, count))
        out.sort(key=lambda v: v.line)
        return out

    def violations(self):
        """Every violation seen so far: load time, then all 32-bit runs (counted)."""
        return list(self.load_violations) + self._violations(self._rec[32].hits)

    def headroom(self):
        """``[(where, func, peak)]`` per source line, largest |intermediate| first, over
        all 32-bit runs so far; ``where`` is ``file:line``."""
        best = {}
        for site, peak in zip(self._sites, self._rec[32].peak, strict=True):
            key = (site.line, site.func)
            if peak > best.get(key, 0):
                best[key] = peak
        rows = [(f"{self.file}:{line}", func, peak) for (line, func), peak in best.items()]
        rows.sort(key=lambda r: -r[2])
        return rows

    def worst_line(self):
        """``"worst line pll.py:140 uses 2**29.3 (step)"``: the largest |intermediate|."""
        rows = self.headroom()
        if not rows:
            return "worst line: nothing measured"
        where, func, peak = rows[0]
        return f"worst line {where} uses 2**{math.log2(peak):.1f} ({func})"

    def reset(self):
        """Forget run-time violations and peaks (load-time violations stay)."""
        rec = self._rec[32]
        rec.peak[:] = [0] * len(rec.peak)
        rec.hits.clear()
        rec.begin()


def _all_equal(values):
    first = values[0]
    return all(type(v) is type(first) and v == first for v in values[1:])


def _triple(values):
    return ", ".join(f"{MODE_NAMES[bits]} {v!r}" for bits, v in zip(MODES, values, strict=True))


def load_viper_module(path):
    """Parse, instrument and load the viper module at ``path``; returns a ``WordModule``.

    A relative path is taken from the current directory, then from the repo root."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    return WordModule(p)


def check_calls(module_path, calls):
    """Load ``module_path`` and ``check`` each ``(func_name, args)``; return the distinct
    problems (``Violation`` objects; empty when clean)."""
    return load_viper_module(module_path).check_calls(calls)
