"""CPython stand-in for MicroPython's ``micropython`` module.

Lets the modules in ``firmware/`` import unchanged under CPython (pytest, ``v2g replay
--runtime cpython``). Decorators return the function untouched, so a ``@viper`` hot path
runs as plain Python with Python's unbounded ints; the 32-bit word checker
(``v2g.build.wordcheck``) is what proves the same source never leaves the machine-word range.

Importing this module also installs the viper cast names (``ptr8``, ``ptr16``, ``ptr32``,
``uint``) as builtins, because viper source uses them as annotations and casts without an
import. On CPython they are identity functions: a ``ptr32(buf)`` cast yields the
``array('i')`` itself, whose loads are already signed 32-bit.

Context: host only. Never copied to a board.
"""

import builtins

_heap_locked = 0


def const(value):
    """Return ``value``; MicroPython folds ``const()`` at compile time."""
    return value


def viper(func):
    """Identity decorator: the function runs as ordinary Python."""
    return func


def native(func):
    """Identity decorator: the function runs as ordinary Python."""
    return func


def _cast(obj):
    return obj


ptr8 = ptr16 = ptr32 = uint = _cast


def heap_lock():
    """Count nested locks like MicroPython; CPython cannot forbid allocation."""
    global _heap_locked
    _heap_locked += 1


def heap_unlock():
    """Release one lock level and return the remaining depth, as MicroPython does."""
    global _heap_locked
    if _heap_locked:
        _heap_locked -= 1
    return _heap_locked


def heap_locked():
    return _heap_locked


def schedule(func, arg):
    """Run ``func(arg)`` at once: CPython has no interrupts to defer from."""
    func(arg)
    return True


def alloc_emergency_exception_buf(size):
    return None


def opt_level(level=None):
    return 0


def mem_info(verbose=False):
    return None


for _name in ("ptr8", "ptr16", "ptr32", "uint"):
    if not hasattr(builtins, _name):
        setattr(builtins, _name, _cast)
