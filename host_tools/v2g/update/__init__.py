"""Signed firmware updates, host side: keys (``v2g keys``), bundles (``v2g sign``) and
sending them to a board (``v2g update``). The board side is ``firmware/bootslot.py`` and
``firmware/services/update.py``; the format is in ``bundle`` and docs/update.md.
"""
