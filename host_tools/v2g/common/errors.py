"""Errors the ``v2g`` command reports to the user.

``UsageError`` is bad input from the user (a file, a line, an option): ``v2g.cli.main``
prints ``v2g <cmd>: error: <message>`` to stderr and exits 2. The message names the
file, line or key, the bad value and what is allowed.

Context: host only.
"""


class UsageError(Exception):
    """Bad input from the user; the CLI prints the message and exits 2."""


class ToolError(Exception):
    """A failure that is not the user's input (e.g. the MicroPython runner crashed);
    the CLI prints the message and exits 1."""
