"""Generate the tick's fused code: ``firmware/tick_fused.py`` (the interrupt body ``run``
and the state block's layout) and ``firmware/tick_fused_compute.py`` (``compute``).

Why: on MicroPython a call from one viper function into another goes through the
runtime's generic call path (argument boxing, a buffer-protocol lookup per ``ptr``
argument, the thread state), a few hundred machine instructions each; the tick makes
half a dozen of them between the ADC and the PWM. The firmware keeps one module per job
(``pll``, ``grid_measure``, ``protect_fast``, ``current``, ``svpwm``), ``tick.compute``
wires them and ``tick._run`` is the interrupt body around it; this generator writes the
same code with every call inlined, the way a C compiler inlines static functions, so
the interrupt calls nothing but the HAL.

What it does, on the modules' own syntax trees:
- every call in ``tick.compute`` (and, recursively, in the functions it calls) to a viper
  function of ``firmware/`` is replaced by the callee's body; a call may stand alone
  (``f(...)``) or be assigned (``x = f(...)``, ``x = int(f(...))``);
- the callee's parameters and locals get a prefix (its module's name); a parameter the
  callee never assigns is the caller's argument name itself, any other one is copied
  first (``prefix_p = arg``, with a ``ptrN`` cast where the types differ);
- ``const()`` names become their integer values; other globals (lookup tables) are
  imported by the generated module, and ``x = ptrN(TABLE)`` casts move to the top of
  the function, once per table;
- ``return`` must be in tail position once ``if c: ...; return v`` followed by more
  statements is read as ``if c: ... else: <the rest>``; it becomes an assignment to
  the caller's target. Anything else (a return inside a loop, a call inside an
  expression, a global the generator cannot resolve) stops the generator with an error
  naming the module and line;
- the arrays of ``compute`` and the tables it reads become parts of one block (BLOCK),
  indexed ``m[offset + i]``;
- ``run`` is ``tick._run`` with that fused compute inlined where it calls
  ``_compute_fused`` (COMPUTE_CALL).

Boards import ``tick_fused`` only: ``tick_fused_compute`` (the same compute as a
function of its own) serves the written ``_run`` (``make_tick(inline=False)``), the
bench's compute-alone figure and the checks, and stays out of a board's RAM.

Usage (host): ``python -m v2g.build.gen_tick`` rewrites both files; ``tests_host`` checks that
the committed files equal the generator's output and that the fused code gives
bit-identical results to the written one on the unix runtime and in CPython.
"""

import ast
import copy
import sys

from v2g.common import paths

TEMPLATE_MODULE = "tick"
TEMPLATE_FUNCTION = "compute"
ISR_TEMPLATE = "_run"  # the interrupt body as written, calling the fused compute
ISR_OUTPUT = "run"
OUTPUT_MODULE = "tick_fused"  # run and the block layout: what boards import
COMPUTE_MODULE = "tick_fused_compute"  # the fused compute on its own
COMPUTE_CALL = "_compute_fused"  # the name ISR_TEMPLATE calls it by
BLOCK_NAME = "m"
# The arrays of the template's parameters, laid end to end in one int block: parameter,
# (module, const) giving its length in words, and a multiplier. The fused function takes
# the block alone (one buffer lookup per tick instead of one per array); ``tick.Control``
# allocates it and hands each step a memoryview of its part (``LAYOUT``).
# Lookup tables (const None: the length of the module's array literal) join the block
# as word copies, which ``Control`` makes at boot: the tick then casts no table either.
BLOCK = (("raw", "tick", "CHANNELS", 1), ("cal", "tick", "CHANNELS", 2),
         ("pll_st", "pll", "STATE_WORDS", 1), ("cc", "current", "WORDS", 1),
         ("prot", "protect_fast", "WORDS", 1), ("pw", "svpwm", "WORDS", 1),
         ("gm", "grid_measure", "STATE_WORDS", 1),
         ("SIN_Q14_B", "tables", None, 1), ("ATAN_T28", "tables", None, 1))
# a table read through this cast reads the same values from a word copy: unsigned
# halfwords through ptr16, words through ptr32 (a signed 'h' or 'b' table would not:
# the cast zero-extends on the board)
_TABLE_CASTS = {"H": "ptr16", "B": "ptr8", "i": "ptr32", "I": "ptr32"}
_PTR_TYPES = ("ptr8", "ptr16", "ptr32")
_BUILTINS = {"int", "uint", "bool", "Exception"} | set(_PTR_TYPES)


class GenError(Exception):
    """The source uses a construct the inliner does not handle (message says where)."""


# ------------------------------------------------------------------ module knowledge
class Module:
    """One firmware module: its viper functions, const values and imported names."""

    _cache = {}
    dir = paths.FIRMWARE_DIR

    @classmethod
    def get(cls, name):
        if name not in cls._cache:
            cls._cache[name] = cls(name)
        return cls._cache[name]

    prefix = None  # locals of an inlined function: None -> "<module or helper>_"

    @classmethod
    def generated(cls, name, functions, prefix=""):
        """A module made here (the fused compute), for templates that call it."""
        m = cls.__new__(cls)
        m.name, m.functions, m.imports, m.consts, m.arrays = name, functions, {}, {}, {}
        m.array_values = {}
        m.prefix = prefix
        cls._cache[name] = m
        return m

    def __init__(self, name):
        self.name = name
        path = Module.dir / (name + ".py")
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.functions = {}  # local name -> FunctionDef (viper only)
        self.imports = {}  # local name -> (module, name)
        self.consts = {}  # name -> int
        self.arrays = {}  # name -> (typecode, length) of `NAME = array("X", (literals))`
        self.array_values = {}  # name -> the literals (None where not a plain literal)
        for node in self.tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "array" and len(node.value.args) == 2
                    and isinstance(node.value.args[0], ast.Constant)
                    and isinstance(node.value.args[1], (ast.Tuple, ast.List))):
                elts = node.value.args[1].elts
                self.arrays[node.targets[0].id] = (node.value.args[0].value, len(elts))
                self.array_values[node.targets[0].id] = tuple(
                    e.value if isinstance(e, ast.Constant) else None for e in elts)
            if isinstance(node, ast.FunctionDef) and any(
                    _is_viper(d) for d in node.decorator_list):
                self.functions[node.name] = node
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                for a in node.names:
                    self.imports[a.asname or a.name] = (node.module, a.name)
            elif (isinstance(node, ast.Assign) and len(node.targets) == 1
                  and isinstance(node.targets[0], ast.Name)
                  and isinstance(node.value, ast.Call)
                  and isinstance(node.value.func, ast.Name)
                  and node.value.func.id == "const"):
                self.consts[node.targets[0].id] = self._eval(node.value.args[0])

    def _eval(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            v = self.const_value(node.id)
            if v is None:
                raise GenError("%s.py line %d: const() of unknown name %r"
                               % (self.name, node.lineno, node.id))
            return v
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self._eval(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = self._eval(node.left), self._eval(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.LShift: lambda: a << b, ast.RShift: lambda: a >> b,
                   ast.FloorDiv: lambda: a // b, ast.BitOr: lambda: a | b,
                   ast.BitAnd: lambda: a & b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        raise GenError("%s.py line %d: const() expression the generator cannot evaluate"
                       % (self.name, node.lineno))

    def const_value(self, name):
        if name in self.consts:
            return self.consts[name]
        if name in self.imports:
            mod, orig = self.imports[name]
            if (Module.dir / (mod + ".py")).exists():
                return Module.get(mod).const_value(orig)
        return None

    def resolve_function(self, name):
        """(module, FunctionDef) of a viper function this module calls by ``name``."""
        if name in self.functions:
            return self, self.functions[name]
        if name in self.imports:
            mod, orig = self.imports[name]
            if mod in Module._cache or (Module.dir / (mod + ".py")).exists():
                m = Module.get(mod)
                if orig in m.functions:
                    return m, m.functions[orig]
        return None


def _is_viper(dec):
    return (isinstance(dec, ast.Attribute) and dec.attr == "viper"
            and isinstance(dec.value, ast.Name) and dec.value.id == "micropython")


def _annotation(arg):
    a = arg.annotation
    return a.id if isinstance(a, ast.Name) else None


# ------------------------------------------------------------------- return handling
def _ends_in_return(stmts):
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return):
        return True
    if isinstance(last, ast.If):
        return _ends_in_return(last.body) and _ends_in_return(last.orelse)
    return False


def _tailify(stmts):
    """Move the statements after an ``if`` whose branch returns into its other branch,
    so that every return ends its path."""
    out = []
    for i, s in enumerate(stmts):
        if isinstance(s, ast.If):
            s.body = _tailify(s.body)
            s.orelse = _tailify(s.orelse)
            rest = stmts[i + 1:]
            b, o = _ends_in_return(s.body), _ends_in_return(s.orelse)
            if rest and (b or o):
                if not b:
                    s.body = _tailify(s.body + rest)
                elif not o:
                    s.orelse = _tailify(s.orelse + rest)
                out.append(s)  # both return: the rest is unreachable
                return out
        out.append(s)
        if isinstance(s, ast.Return):
            return out  # anything after it is unreachable
    return out


def _replace_returns(stmts, where, ret_name):
    """Turn tail returns into ``ret_name = value`` (or nothing); fail on any other."""
    out = []
    for k, s in enumerate(stmts):
        if isinstance(s, ast.Return):
            if k != len(stmts) - 1:
                raise GenError("%s line %d: return not in tail position" % (where, s.lineno))
            if s.value is not None and ret_name is not None:
                out.append(ast.Assign(targets=[ast.Name(ret_name, ast.Store())],
                                      value=s.value, lineno=s.lineno))
            continue
        if isinstance(s, ast.If):
            s.body = _replace_returns(s.body, where, ret_name) or [ast.Pass()]
            s.orelse = _replace_returns(s.orelse, where, ret_name)
        else:
            for node in ast.walk(s):
                if isinstance(node, ast.Return):
                    raise GenError("%s line %d: return inside a loop or block"
                                   % (where, node.lineno))
        out.append(s)
    return out


# --------------------------------------------------------------------------- inliner
class _Renamer(ast.NodeTransformer):
    def __init__(self, rename, consts, globals_used, where, skip):
        self.rename = rename
        self.skip = skip
        self.consts = consts
        self.globals_used = globals_used
        self.where = where

    def visit_Name(self, node):
        if node.id in self.rename:
            return ast.copy_location(ast.Name(self.rename[node.id], node.ctx), node)
        if node.id in self.skip:
            return node
        if isinstance(node.ctx, ast.Load):
            v = self.consts(node.id)
            if v is not None:
                return ast.copy_location(ast.Constant(v), node)
            if node.id not in _BUILTINS:
                self.globals_used.add((self.where, node.id))
        return node


def _assigned_names(stmts):
    names = set()
    for s in stmts:
        for node in ast.walk(s):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


class Inliner:
    def __init__(self):
        self.globals = {}  # name -> (module, original name): imports of the output
        self.taken = set()  # every local name of the fused function
        self.prefix_count = {}
        self.types = {}  # fused local -> 'int' | 'ptr32' | ... | 'object' (params, casts)

    def _prefix(self, module, fn):
        """A module's public step is named after the module, a private helper after
        itself: ``pll_x``, ``isqrt_n``; a second inlined copy gets a number."""
        if module.prefix is not None:
            return module.prefix
        base = fn.name.lstrip("_") if fn.name.startswith("_") else module.name
        n = self.prefix_count.get(base, 0)
        self.prefix_count[base] = n + 1
        return "%s_" % base if n == 0 else "%s%d_" % (base, n)

    def _call_of(self, stmt):
        """(call, target name or None) when ``stmt`` is a bare or assigned call."""
        value, target = None, None
        if isinstance(stmt, ast.Expr):
            value = stmt.value
        elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
              and isinstance(stmt.targets[0], ast.Name)):
            value, target = stmt.value, stmt.targets[0].id
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "int" and len(value.args) == 1
                and isinstance(value.args[0], ast.Call)):
            value = value.args[0]
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            return value, target
        return None, None

    def expand(self, module, stmts):
        """Inline every call to a firmware viper function in ``stmts`` (in ``module``'s
        namespace), recursing into blocks; returns new statements."""
        out = []
        for s in stmts:
            call, target = self._call_of(s)
            found = module.resolve_function(call.func.id) if call is not None else None
            if found is not None:
                out.extend(self.inline(module, found[0], found[1], call, target))
                continue
            for field in ("body", "orelse"):
                if hasattr(s, field) and isinstance(getattr(s, field), list):
                    setattr(s, field, self.expand(module, getattr(s, field)))
            for node in ast.walk(s):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and module.resolve_function(node.func.id) is not None):
                    raise GenError("%s.py line %d: call to %s inside an expression"
                                   % (module.name, node.lineno, node.func.id))
            out.append(s)
        return out

    def inline(self, caller, callee_mod, fn, call, target):
        where = "%s.py (%s)" % (callee_mod.name, fn.name)
        if call.keywords or len(call.args) != len(fn.args.args):
            raise GenError("%s.py line %d: call to %s needs exactly its %d positional "
                           "arguments" % (caller.name, call.lineno, fn.name,
                                          len(fn.args.args)))
        body = copy.deepcopy(fn.body)
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body = body[1:]
        # the callee's own calls first, in its own namespace
        before = set(self.taken)
        body = self.expand(callee_mod, body)
        nested = self.taken - before
        body = _tailify(body)
        prefix = self._prefix(callee_mod, fn)
        assigned = _assigned_names(body) - nested
        rename, pre = {}, []
        for p, a in zip(fn.args.args, call.args):
            ann = _annotation(p) or "object"
            have = self.types.get(a.id, "int") if isinstance(a, ast.Name) else None
            if ann == "int" and have not in (None, "int"):
                raise GenError("%s.py line %d: %s gets %r (%s) for int parameter %s"
                               % (caller.name, call.lineno, fn.name, a.id, have, p.arg))
            if isinstance(a, ast.Name) and p.arg not in assigned and (
                    ann in ("object", "int") or have == ann):
                rename[p.arg] = a.id  # the caller's own local, no copy
                continue
            if ann in _PTR_TYPES and have not in (ann, "object"):
                raise GenError("%s.py line %d: %s gets %s for %s parameter %s"
                               % (caller.name, call.lineno, fn.name,
                                  ast.unparse(a), ann, p.arg))
            name = prefix + p.arg
            if name in self.taken:
                raise GenError("%s: parameter copy %r clashes with a name of the caller"
                               % (where, name))
            rename[p.arg] = name
            value = a
            if ann in _PTR_TYPES and have != ann:
                value = ast.Call(ast.Name(ann, ast.Load()), [a], [])
            pre.append(ast.Assign(targets=[ast.Name(name, ast.Store())], value=value,
                                  lineno=call.lineno))
            self.types[name] = ann
        params = {p.arg for p in fn.args.args}
        for n in sorted(assigned - params):
            if n in rename:
                continue
            new = prefix + n
            if new in self.taken or callee_mod.const_value(new) is not None:
                raise GenError("%s: local %r clashes after prefixing" % (where, n))
            rename[n] = new
        ret = target
        if ret is None:
            ret = prefix + "ret" if fn.returns is not None else None
        # names this inlining created (the caller's own names stay the caller's)
        self.taken.update(v for v in list(rename.values()) + [ret or ""]
                          if v.startswith(prefix))
        used = set()
        renamer = _Renamer(rename, callee_mod.const_value, used, callee_mod.name, nested)
        body = [renamer.visit(s) for s in body]
        # after renaming: the target is the caller's name, the value the callee's
        body = _replace_returns(body, where, ret)
        for modname, g in used:
            self._use_global(Module.get(modname), g, where)
        for s in body:  # remember cast locals' types (table pointers, ptr copies)
            if (isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
                    and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name)
                    and s.value.func.id in _PTR_TYPES):
                self.types[s.targets[0].id] = s.value.func.id
        return pre + body

    def _use_global(self, module, name, where):
        if name in module.functions:
            raise GenError("%s: %s is called in a way the generator cannot inline"
                           % (where, name))
        if name not in module.imports:
            raise GenError("%s: global %r is neither a const nor an import" % (where, name))
        origin = module.imports[name]
        if self.globals.get(name, origin) != origin:
            raise GenError("%s: global %r names two different objects" % (where, name))
        self.globals[name] = origin


def _hoist_table_casts(fn, table_names):
    """Move ``x = ptrN(TABLE)`` to the top of ``fn``, one per (type, table)."""
    hoisted, rename = {}, {}

    class Hoist(ast.NodeTransformer):
        def visit_Assign(self, node):
            v = node.value
            if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                    and v.func.id in _PTR_TYPES and len(v.args) == 1
                    and isinstance(v.args[0], ast.Name) and v.args[0].id in table_names):
                key = (v.func.id, v.args[0].id)
                if key not in hoisted:
                    hoisted[key] = ("_%s_%s" % (v.args[0].id, v.func.id)).lower()
                rename[node.targets[0].id] = hoisted[key]
                return None
            return node

    fn.body = [Hoist().visit(s) for s in fn.body]
    fn.body = [s for s in fn.body if s is not None]
    for stmt in fn.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and node.id in rename:
                node.id = rename[node.id]
    pre = [ast.Assign(targets=[ast.Name(name, ast.Store())],
                      value=ast.Call(ast.Name(t, ast.Load()), [ast.Name(tab, ast.Load())], []),
                      lineno=1)
           for (t, tab), name in sorted(hoisted.items())]
    fn.body = pre + fn.body


def block_layout(block=BLOCK):
    """((part, offset, words), ...), the block's length in words, and {table part:
    typecode} for the parts that are copies of a module's lookup table."""
    layout, off, tables = [], 0, {}
    for name, mod, const_name, mult in block:
        if const_name is None:
            if name not in Module.get(mod).arrays:
                raise GenError("%s.py has no array literal %s (block part)" % (mod, name))
            tables[name], n = Module.get(mod).arrays[name]
        else:
            n = Module.get(mod).const_value(const_name)
            if n is None:
                raise GenError("%s.py has no const %s (block part %s)"
                               % (mod, const_name, name))
        layout.append((name, off, n * mult))
        off += n * mult
    return tuple(layout), off, tables


def _is_add(node):
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)


def _fold(node):
    """``c1 + c2`` -> ``c``; ``c1 + (c2 + e)`` and ``c1 + (e + c2)`` -> ``c + e``: the
    block offset added to an index that has a constant part."""
    if not (_is_add(node) and isinstance(node.left, ast.Constant)):
        return node
    c, rest = node.left.value, node.right
    if isinstance(rest, ast.Constant):
        return ast.Constant(c + rest.value)
    if _is_add(rest):
        for k, other in ((rest.left, rest.right), (rest.right, rest.left)):
            if isinstance(k, ast.Constant):
                return ast.BinOp(ast.Constant(c + k.value), ast.Add(), other)
    return node


def _to_block(fn, layout, tables):
    """Rewrite ``P[i]`` of every block parameter P (and of ``x = ptr32(P)`` aliases) and
    of ``x = ptrN(TABLE)`` table casts as ``m[offset + i]``; the parameters become the
    one block parameter."""
    offsets = {name: off for name, off, _ in layout}
    params = [a.arg for a in fn.args.args]
    if not set(offsets) - set(tables) <= set(params):
        raise GenError("%s.%s takes %s; the block holds %s"
                       % (TEMPLATE_MODULE, TEMPLATE_FUNCTION, params, sorted(offsets)))
    for a in fn.args.args:
        if a.arg in offsets and _annotation(a) != "ptr32":
            raise GenError("%s.%s: parameter %s must be ptr32 to live in the block"
                           % (TEMPLATE_MODULE, TEMPLATE_FUNCTION, a.arg))

    class Alias(ast.NodeTransformer):
        def visit_Assign(self, node):
            v = node.value
            if (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                    and v.func.id in _PTR_TYPES and len(v.args) == 1
                    and isinstance(v.args[0], ast.Name) and v.args[0].id in offsets):
                src = v.args[0].id
                want = _TABLE_CASTS.get(tables[src]) if src in tables else "ptr32"
                if v.func.id != want or len(node.targets) != 1 or not isinstance(
                        node.targets[0], ast.Name):
                    raise GenError("line %d: only `x = %s(%s)` may alias this block part"
                                   % (node.lineno, want, src))
                offsets[node.targets[0].id] = offsets[v.args[0].id]
                return None
            return self.generic_visit(node)

    class Index(ast.NodeTransformer):
        def visit_Subscript(self, node):
            if isinstance(node.value, ast.Name) and node.value.id in offsets:
                idx = _fold(ast.BinOp(ast.Constant(offsets[node.value.id]), ast.Add(),
                                      self.visit(node.slice)))
                return ast.copy_location(
                    ast.Subscript(ast.Name(BLOCK_NAME, ast.Load()), idx, node.ctx), node)
            return self.generic_visit(node)

        def visit_Name(self, node):
            if node.id in offsets:
                raise GenError("line %d: block part %s used other than by index"
                               % (node.lineno, node.id))
            return node

    fn.body = [s for s in (Alias().visit(st) for st in fn.body) if s is not None]
    fn.body = [Index().visit(st) for st in fn.body]
    fn.args.args = [ast.arg(BLOCK_NAME, ast.Name("ptr32", ast.Load()))] + [
        a for a in fn.args.args if a.arg not in offsets]
    for name in tables:  # tables read from the block need no import
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id == name:
                raise GenError("table %s used other than through a cast" % name)


# ------------------------------------------------------------ unrolling and folding
UNROLL_MAX = 32  # a `while i < N` loop with a constant N up to this is unrolled
_WORD = 1 << 30  # folded constants stay machine words on a 32-bit board


def _counted_loop(init, loop):
    """(name, N) when ``init``/``loop`` are ``i = 0`` / ``while i < N: ...; i += 1``
    with ``i`` assigned nowhere else in the body and no break/continue/else."""
    if not (isinstance(init, ast.Assign) and len(init.targets) == 1
            and isinstance(init.targets[0], ast.Name) and isinstance(init.value, ast.Constant)
            and init.value.value == 0 and isinstance(loop, ast.While) and not loop.orelse):
        return None
    var, t = init.targets[0].id, loop.test
    if not (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == var
            and len(t.ops) == 1 and isinstance(t.ops[0], ast.Lt)
            and isinstance(t.comparators[0], ast.Constant)
            and isinstance(t.comparators[0].value, int)
            and 0 < t.comparators[0].value <= UNROLL_MAX):
        return None
    last = loop.body[-1]
    if not (isinstance(last, ast.AugAssign) and isinstance(last.target, ast.Name)
            and last.target.id == var and isinstance(last.op, ast.Add)
            and isinstance(last.value, ast.Constant) and last.value.value == 1):
        return None
    for s in loop.body[:-1]:
        for node in ast.walk(s):
            if isinstance(node, (ast.Break, ast.Continue, ast.While, ast.For)):
                return None
            if isinstance(node, ast.Name) and node.id == var and not isinstance(
                    node.ctx, ast.Load):
                return None
    return var, t.comparators[0].value


class _Subst(ast.NodeTransformer):
    def __init__(self, name, value):
        self.name, self.value = name, value

    def visit_Name(self, node):
        if node.id == self.name and isinstance(node.ctx, ast.Load):
            return ast.copy_location(ast.Constant(self.value), node)
        return node


def _loads(node, name):
    return sum(1 for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == name
               and isinstance(n.ctx, ast.Load))


def _unroll(stmts, fn):
    """Unroll counted loops (``_counted_loop``) in ``stmts`` and nested blocks of ``fn``:
    the body once per value of the counter, the counter a constant in each copy (then
    folded: constant shifts, constant table words). The counter keeps its final value
    when anything outside the loop reads it."""
    out, i = [], 0
    while i < len(stmts):
        s = stmts[i]
        for field in ("body", "orelse"):
            if isinstance(getattr(s, field, None), list):
                setattr(s, field, _unroll(getattr(s, field), fn))
        found = _counted_loop(s, stmts[i + 1]) if i + 1 < len(stmts) else None
        if found is None:
            out.append(s)
            i += 1
            continue
        var, n = found
        loop = stmts[i + 1]
        for k in range(n):
            for b in loop.body[:-1]:
                out.append(_Subst(var, k).visit(copy.deepcopy(b)))
        if _loads(fn, var) > _loads(loop, var):
            out.append(ast.Assign(targets=[ast.Name(var, ast.Store())],
                                  value=ast.Constant(n), lineno=s.lineno))
        i += 2
    return out


class _Fold(ast.NodeTransformer):
    """Constant folding the MicroPython compiler leaves to run time: ``c1 op c2``,
    ``e >> 0``, ``c1 + (c2 + e)`` in block indexes, and block words that are table
    copies read at a constant index (the table's literal). Folded values stay within
    +/-2**30 (machine words on a 32-bit board)."""

    _OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
            ast.Mult: lambda a, b: a * b, ast.LShift: lambda a, b: a << b,
            ast.RShift: lambda a, b: a >> b, ast.BitAnd: lambda a, b: a & b,
            ast.BitOr: lambda a, b: a | b, ast.BitXor: lambda a, b: a ^ b}

    def __init__(self, table_words):
        self.table_words = table_words  # block offset -> literal value

    def visit_BinOp(self, node):
        self.generic_visit(node)
        lc, rc = (isinstance(node.left, ast.Constant) and type(node.left.value) is int,
                  isinstance(node.right, ast.Constant) and type(node.right.value) is int)
        op = type(node.op)
        if lc and rc and op in self._OPS and (op not in (ast.LShift, ast.RShift)
                                              or 0 <= node.right.value < 31):
            v = self._OPS[op](node.left.value, node.right.value)
            if -_WORD < v < _WORD:
                return ast.copy_location(ast.Constant(v), node)
        if rc and node.right.value == 0 and op in (ast.Add, ast.Sub, ast.LShift,
                                                   ast.RShift, ast.BitOr, ast.BitXor):
            return node.left
        if lc and op is ast.Add:
            folded = _fold(node)
            if folded is not node:
                return self.visit(folded)
        return node

    def _test(self, node):
        """A test against zero as the test itself: ``x != 0`` -> ``x``, ``x == 0`` ->
        ``not x`` (viper: compare with 0 and branch, instead of a compare that makes a
        bool that is then compared with 0 and branched on)."""
        if isinstance(node, ast.BoolOp):
            node.values = [self._test(v) for v in node.values]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = self._test(node.operand)
        elif (isinstance(node, ast.Compare) and len(node.ops) == 1
              and isinstance(node.ops[0], (ast.Eq, ast.NotEq))
              and isinstance(node.comparators[0], ast.Constant)
              and type(node.comparators[0].value) is int and node.comparators[0].value == 0):
            if isinstance(node.ops[0], ast.NotEq):
                return node.left
            return ast.copy_location(ast.UnaryOp(ast.Not(), node.left), node)
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        node.test = self._test(node.test)
        return node

    def visit_While(self, node):
        self.generic_visit(node)
        node.test = self._test(node.test)
        return node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if (isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name)
                and node.value.id == BLOCK_NAME and isinstance(node.slice, ast.Constant)
                and node.slice.value in self.table_words):
            return ast.copy_location(ast.Constant(self.table_words[node.slice.value]), node)
        return node


def _table_words(layout, tables, block):
    """{block offset: value} of the table copies whose words are plain literals
    within +/-2**30 (what a constant index may read as a literal)."""
    words = {}
    mods = {name: mod for name, mod, _c, _m in block}
    for name, off, n in layout:
        if name in tables:
            vals = Module.get(mods[name]).array_values.get(name, ())
            for i, v in enumerate(vals[:n]):
                if isinstance(v, int) and -_WORD < v < _WORD:
                    words[off + i] = v
    return words


def _optimize(fn, layout, tables, block):
    """Unroll counted loops and fold constants in the fused function."""
    fn.body = _unroll(fn.body, fn)
    folder = _Fold(_table_words(layout, tables, block))
    fn.body = [folder.visit(s) for s in fn.body]


# viper keeps the first two locals (parameters first, then by first appearance) in
# registers when compiled to .mpy (py/emitnative.c MAX_REGS_FOR_LOCAL_VARS); every other
# local is a stack slot, loaded and stored around each use
REGISTER_LOCALS = 2


def _hint_register_local(fn):
    """When ``fn`` leaves a register local free, give it the local used most often (by
    count of names in the code, the unrolled loops included): assigning it first makes it
    the next local. Its value at the top is never read (it is assigned again before its
    first use, as every local of the generated code is)."""
    free = REGISTER_LOCALS - len(fn.args.args)
    if free <= 0:
        return
    params = {a.arg for a in fn.args.args}
    stores = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)
              and isinstance(n.ctx, ast.Store)}
    uses = {}
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and n.id in stores and n.id not in params:
            uses[n.id] = uses.get(n.id, 0) + 1
    hot = sorted(uses, key=lambda k: (-uses[k], k))[:free]
    doc = int(isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant))
    fn.body[doc:doc] = [ast.Assign(targets=[ast.Name(h, ast.Store())], value=ast.Constant(0),
                               lineno=1) for h in hot]


def _fuse(tmpl, name):
    """Template ``name`` of module ``tmpl`` with its calls inlined and consts replaced:
    (FunctionDef without decorators, Inliner)."""
    if name not in tmpl.functions:
        raise GenError("%s.py has no viper function %s" % (tmpl.name, name))
    fn = copy.deepcopy(tmpl.functions[name])
    inl = Inliner()
    for a in fn.args.args:
        inl.types[a.arg] = _annotation(a) or "object"
        inl.taken.add(a.arg)
    inl.taken.update(_assigned_names(fn.body))
    for node in ast.walk(fn):  # objects unpacked from a tuple stay objects in viper
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            for t in node.targets[0].elts:
                if isinstance(t, ast.Name):
                    inl.types[t.id] = "object"
    doc = fn.body[0] if isinstance(fn.body[0], ast.Expr) else None
    body = fn.body[1:] if doc is not None else fn.body
    body = inl.expand(tmpl, body)
    used = set()
    skip = inl.taken | set(inl.globals)
    body = [_Renamer({}, tmpl.const_value, used, tmpl.name, skip).visit(s) for s in body]
    for modname, g in used:
        inl._use_global(Module.get(modname), g, "%s.py (%s)" % (tmpl.name, name))
    fn.body = body
    fn.decorator_list = []
    return fn, inl


def fused_function(fw_dir=None, block=BLOCK):
    """The fused ``compute`` as an ast.FunctionDef, and the imports it needs, from the
    modules in ``fw_dir`` (default ``firmware/``); ``block`` None keeps the template's
    parameters as they are."""
    Module._cache.clear()
    Module.dir = paths.FIRMWARE_DIR if fw_dir is None else fw_dir
    fn, inl = _fuse(Module.get(TEMPLATE_MODULE), TEMPLATE_FUNCTION)
    _hoist_table_casts(fn, set(inl.globals))
    if block is not None:
        layout, _, tables = block_layout(block)
        _to_block(fn, layout, tables)
        _optimize(fn, layout, tables, block)
        for name in tables:
            inl.globals.pop(name, None)
    fn.body.insert(0, ast.Expr(ast.Constant(
        "tick.compute with every step inlined (generated); ``m`` is the block of LAYOUT. "
        "Context: tick.")))
    return fn, inl.globals


def fused_run(compute_fn):
    """``run(m, ctx)``: the interrupt body ``tick.<ISR_TEMPLATE>`` with the fused compute
    inlined, so that a tick calls nothing but the HAL (``tick.make_tick`` wraps it in
    the handler that catches exceptions: a function with a ``try`` keeps no local in a
    register, so the hot body stays outside it). Call after ``fused_function``."""
    fused = copy.deepcopy(compute_fn)
    fused.body = fused.body[1:]  # its docstring
    Module.generated(COMPUTE_MODULE, {TEMPLATE_FUNCTION: fused})
    tmpl = Module.get(TEMPLATE_MODULE)
    tmpl.imports[COMPUTE_CALL] = (COMPUTE_MODULE, TEMPLATE_FUNCTION)  # imported lazily
    fn, inl = _fuse(tmpl, ISR_TEMPLATE)
    if inl.globals:
        raise GenError("%s.%s uses globals %s: the interrupt would look them up every tick"
                       % (TEMPLATE_MODULE, ISR_TEMPLATE, sorted(inl.globals)))
    for node in ast.walk(fn):
        if isinstance(node, ast.Try):
            raise GenError("%s.%s line %d: no try here (it would keep every local of the "
                           "fused body out of registers); make_tick's handler catches"
                           % (TEMPLATE_MODULE, ISR_TEMPLATE, node.lineno))
    folder = _Fold({})  # the template's own tests and constants (the compute is folded)
    fn.body = [folder.visit(s) for s in fn.body]
    fn.name = ISR_OUTPUT
    fn.body.insert(0, ast.Expr(ast.Constant(
        "tick.%s with the fused compute inlined (generated). Context: tick." % ISR_TEMPLATE)))
    return fn


def _header(what):
    return ('"""%s: generated, do not edit.\n\n'
            "Regenerate with ``python -m v2g.build.gen_tick`` after changing ``tick.compute``,\n"
            "``tick.%s`` or any step they call (see ``v2g.build.gen_tick`` for how and why).\n"
            "Context: tick (allocation-free viper, like the steps it is made of).\n"
            '"""\n\nimport micropython\n' % (what, ISR_TEMPLATE))


def render(fw_dir=None, block=BLOCK, isr=True, thumb=None):
    """{module name: text} of the generated modules; GenError names what cannot be
    inlined. ``isr`` False leaves out the interrupt body (templates without one);
    ``thumb`` (default: the firmware's own tree) adds THUMB_OUTPUT, the body calling the
    asm_thumb kernels."""
    if thumb is None:
        thumb = fw_dir is None and block is BLOCK
    fn, globs = fused_function(fw_dir, block)
    comp = copy.deepcopy(fn)  # the compute on its own: a register left for a hot local
    _hint_register_local(comp)
    by_module = {}
    for name, (mod, orig) in sorted(globs.items()):
        by_module.setdefault(mod, []).append(orig if orig == name else "%s as %s"
                                             % (orig, name))
    imports = "".join("\nfrom %s import %s\n" % (m, ", ".join(n)) for m, n in
                      sorted(by_module.items()))
    out = {COMPUTE_MODULE: "%s%s\n\n@micropython.viper\n%s\n" % (
        _header("The tick's compute() with every step inlined"), imports,
        ast.unparse(ast.fix_missing_locations(comp)))}
    text = _header("The tick's state block and interrupt body with every step inlined")
    layout_text = ""
    if block is not None:
        parts, words, tables = block_layout(block)
        layout_text = ("\n# the block: (part, offset, words) of tick.compute's arrays, end to "
                       "end,\n# then word copies of the lookup tables it reads (TABLES)\n"
                       "LAYOUT = %r\nBLOCK_WORDS = %d\nTABLES = %r\n"
                       % (parts, words, tuple(sorted(tables))))
        text += layout_text
    if isr:
        run_fn = fused_run(fn)
        text += "\n\n@micropython.viper\n%s\n" % ast.unparse(
            ast.fix_missing_locations(run_fn))
        if thumb:
            out.update(render_thumb(fn, run_fn, layout_text))
    out[OUTPUT_MODULE] = text
    return out


# ------------------------------------------------------------- the Thumb variant
THUMB_OUTPUT = "tick_fused_thumb"  # layout and run calling the asm_thumb kernels
THUMB_COMPUTE = "tick_fused_thumb_compute"  # compute calling them (bench, tests)
THUMB_KERNEL_MODULE = "tick_thumb"  # firmware/thumb/tick_thumb.py: the kernels
# Each kernel replaces one stretch of top-level statements of the fused compute (and of
# the same statements inlined into run): (first statement, last statement, statements
# the stretch must hold (the kernel's arguments use them), replacement, words the kernel
# writes that the stretch left to a later statement: nothing after the stretch may read
# them before that statement writes them). Statements are
# matched on their ast.unparse text, so a change to a step that touches a stretch stops
# the generator (GenError) until the kernel and this table follow it.
THUMB_KERNELS = (
    ("pll_fr = pll_win_q8 - (pll_ni << 8) << 6",
     "pll_v_pos = (pll_x >> 8) * ((pll_w_r >> 8) * 19898 >> 12) >> 15",
     ("pll_fr2 = pll_fr * pll_fr >> 15",),
     "pll_phi = int(pll_window_cordic(m))\npll_v_pos = m[29]", ("m[29]",)),
    ("grid_measure_jd = grid_measure_pos - (grid_measure_win_q8 + 256 >> 9) & 127",
     "m[868] = grid_measure_m_c",
     ("grid_measure_m = m[902] // grid_measure_win_q8", "m[866] = grid_measure_m_a",
      "m[867] = grid_measure_m_b"),
     "gm_channels(m, m[902] // grid_measure_win_q8)\n"
     "grid_measure_m_a = m[866]\ngrid_measure_m_b = m[867]\ngrid_measure_m_c = m[868]",
     ()),
)


def _names(nodes, ctx):
    return {n.id for s in nodes for n in ast.walk(s)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _thumb_body(body, where):
    """``body`` (top-level statements) with each THUMB_KERNELS stretch replaced."""
    body = list(body)
    for first, last, holds, repl, early in THUMB_KERNELS:
        text = [ast.unparse(s) for s in body]
        if text.count(first) != 1 or text.count(last) != 1:
            raise GenError("%s: the Thumb kernel stretch %r .. %r is not in the fused code "
                           "once: update firmware/thumb/tick_thumb.py and THUMB_KERNELS"
                           % (where, first, last))
        i, j = text.index(first), text.index(last) + 1
        stretch = text[i:j]
        for h in holds:
            if h not in stretch:
                raise GenError("%s: the Thumb kernel stretch from %r no longer holds %r"
                               % (where, first, h))
        new = ast.parse(repl).body
        # a value the stretch leaves in a local must come from the replacement, or be
        # assigned again before the rest reads it (the first statement naming it)
        given = _names(new, ast.Store)
        rest = body[j:]
        for name in sorted(_names(body[i:j], ast.Store) - given):
            for s in rest:
                if name in _names([s], ast.Load):
                    raise GenError("%s: %s, set in the Thumb kernel stretch from %r, is read "
                                   "after it" % (where, name, first))
                if name in _names([s], ast.Store):
                    break
        for word in early:
            for s in rest:
                if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == word:
                    break
                if word in ast.unparse(s):
                    raise GenError("%s: %s, written early by the Thumb kernel replacing %r, "
                                   "is read before the fused code writes it" % (where, word, first))
            else:
                raise GenError("%s: nothing after the stretch from %r writes %s"
                               % (where, first, word))
        body[i:j] = new
    # locals only the stretches read: drop their top-level assignments (no call in them,
    # so nothing else happens), until none is left
    while True:
        loaded = _names(body, ast.Load)
        dead = [s for s in body if isinstance(s, ast.Assign) and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name) and s.targets[0].id not in loaded
                and not any(isinstance(n, ast.Call) for n in ast.walk(s.value))]
        if not dead:
            return body
        body = [s for s in body if not any(s is d for d in dead)]


def render_thumb(fn, run_fn, layout_text):
    """{THUMB_OUTPUT: the block layout (``layout_text``) and ``run``, THUMB_COMPUTE:
    ``compute``}, both calling the kernels where the viper code has THUMB_KERNELS."""
    comp = copy.deepcopy(fn)
    comp.body = comp.body[:1] + _thumb_body(comp.body[1:], "compute")
    comp.body[0] = ast.Expr(ast.Constant(
        "tick.compute fused (generated), its heaviest stretches in %s's asm_thumb "
        "kernels. Context: tick." % THUMB_KERNEL_MODULE))
    _hint_register_local(comp)
    run = copy.deepcopy(run_fn)
    run.body = run.body[:1] + _thumb_body(run.body[1:], "run")
    run.body[0] = ast.Expr(ast.Constant(
        "tick.%s with the fused compute inlined, calling the asm_thumb kernels "
        "(generated). Context: tick." % ISR_TEMPLATE))
    kernels = sorted({n.func.id for k in THUMB_KERNELS for n in ast.walk(ast.parse(k[3]))
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                      and n.func.id != "int"})

    def head(what):
        return ('"""%s: generated, do not edit.\n\n'
                "The stretches of THUMB_KERNELS (``v2g.build.gen_tick``) call the kernels of "
                "``%s``\n(firmware/thumb/); importing this module fails where that one "
                "cannot be compiled\n(no asm_thumb), and ``tick`` keeps the viper body. "
                "Regenerate with\n``python -m v2g.build.gen_tick``. Context: tick "
                "(allocation-free).\n"
                '"""\n\nimport micropython\n\nfrom %s import %s\n'
                % (what, THUMB_KERNEL_MODULE, THUMB_KERNEL_MODULE, ", ".join(kernels)))

    return {
        THUMB_OUTPUT: "%s%s\n\n@micropython.viper\n%s\n" % (
            head("``tick_fused`` (block layout and interrupt body) for cores with the inline "
                 "Thumb\nassembler"), layout_text,
            ast.unparse(ast.fix_missing_locations(run))),
        THUMB_COMPUTE: "%s\n\n@micropython.viper\n%s\n" % (
            head("``tick_fused_compute`` for cores with the inline Thumb assembler"),
            ast.unparse(ast.fix_missing_locations(comp)))}


def main():
    try:
        texts = render()
    except GenError as e:
        sys.stderr.write("gen_tick: %s\n" % e)
        return 2
    for name, text in texts.items():
        (paths.FIRMWARE_DIR / (name + ".py")).write_text(text)
        sys.stdout.write("wrote firmware/%s.py\n" % name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
