"""Machine-code bytes in a ``.mpy`` file (the native/viper functions of a module).

    from v2g.build import mpysize
    mpysize.native_bytes(Path("tick_fused.mpy").read_bytes())   # -> int

A board that imports a module with ``@micropython.viper`` functions from a ``.mpy`` copies
their machine code into its GC heap (rp2, stm32); the unix runtime puts native code in
memory of its own, outside the GC heap, so a heap measured there misses it. ``v2g.heap``
adds this figure back. The walk follows MicroPython's ``.mpy`` v6 layout (as
``tools/mpy-tool.py`` reads it): header, qstr and object tables, then the tree of raw
codes ``(len << 3 | children << 2 | kind)``; kind 0 is bytecode, the others native.
Context: host only.
"""

_OBJ_STR, _OBJ_BYTES, _OBJ_TUPLE = 5, 6, 10
_SIMPLE_OBJS = (0, 1, 2, 3, 4)  # fun table, None, False, True, Ellipsis
_VIPER = 2  # kind_len & 3: 0 bytecode, 1 native, 2 viper, 3 asm
_RELOC, _RODATA, _BSS = 0x10, 0x20, 0x40
_ARCH_FLAGS_PRESENT = 0x40


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def byte(self):
        b = self.data[self.pos]
        self.pos += 1
        return b

    def skip(self, n):
        self.pos += n

    def uint(self):
        i = 0
        while True:
            b = self.byte()
            i = (i << 7) | (b & 0x7F)
            if not b & 0x80:
                return i


def _obj(r):
    t = r.byte()
    if t in _SIMPLE_OBJS:
        return
    n = r.uint()
    if t == _OBJ_TUPLE:
        for _ in range(n):
            _obj(r)
        return
    r.skip(n + (1 if t in (_OBJ_STR, _OBJ_BYTES) else 0))


def _raw_code(r, sizes):
    kind_len = r.uint()
    kind, children, n = kind_len & 3, (kind_len >> 2) & 1, kind_len >> 3
    r.skip(n)
    if kind == 0:
        sizes[0] += n
    else:
        sizes[1] += n
        if kind == 1:
            r.uint()  # prelude offset
        else:
            flags = r.uint()
            if kind == _VIPER:
                rodata = r.uint() if flags & _RODATA else 0
                if flags & _BSS:
                    sizes[1] += r.uint()
                r.skip(rodata)
                sizes[1] += rodata
                if flags & _RELOC:
                    while True:
                        op = r.byte()
                        if op == 0xFF:
                            break
                        if op & 1:
                            r.uint()
                        op >>= 1
                        if op <= 5 and op & 1:
                            r.uint()
            else:
                r.uint()
                r.uint()
    if children:
        for _ in range(r.uint()):
            _raw_code(r, sizes)


def code_sizes(data):
    """``(bytecode_bytes, native_bytes)`` of the raw codes in a .mpy file's bytes."""
    r = _Reader(data)
    if r.byte() != ord("M"):
        raise ValueError("not a .mpy file")
    r.byte()
    feature = r.byte()
    r.byte()
    if feature & _ARCH_FLAGS_PRESENT:
        r.uint()
    n_qstr, n_obj = r.uint(), r.uint()
    for _ in range(n_qstr):
        ln = r.uint()
        if not ln & 1:
            r.skip((ln >> 1) + 1)
    for _ in range(n_obj):
        _obj(r)
    sizes = [0, 0]
    _raw_code(r, sizes)
    if r.pos != len(data):
        raise ValueError(".mpy walk ended at %d of %d bytes" % (r.pos, len(data)))
    return tuple(sizes)


def native_bytes(data):
    return code_sizes(data)[1]
