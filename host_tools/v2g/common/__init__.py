"""Shared helpers at the bottom of the host package.

``errors`` (``UsageError`` exits 2, ``ToolError`` exits 1), ``paths`` (the repo tree and
the MicroPython unix runtime), ``runtime`` (running firmware modules under CPython or the
unix runtime), ``boards`` (reading and validating ``boards/<name>/board.json``).

May import: the standard library only. Every other subpackage may import this one.
Context: host only.
"""
