"""Production lockdown: with ``production`` = 1 the console gives no control of the board.

    locked = lockdown.apply(app)    # main.py, after App(): True when locked

At boot, when the device config says ``production: 1`` or the board is already locked
(``lock.json``, kept on flash: a config that drops the flag does not unlock it):
``micropython.kbd_intr(-1)`` (Ctrl-C no longer interrupts), ``os.dupterm(None)`` where
the port has it (the REPL leaves the UART), and ``app.locked = True``, which the
simulated board's REPL task honours (it reads and drops every console byte: no prompt,
no raw REPL, Ctrl-A/B/C/D/E do nothing). main.py resets instead of returning to a REPL
when something escapes. What stays: the link (status, logs, update, config).

Leaving production needs a signed config, never a key press: ``config.signed`` on the
board's flash (``v2g sign-config``; over the link: ``v2g config push-signed``), verified at
boot with the update key: 128 hex digits of an Ed25519 signature of SHA-256(JSON), a
newline, then the JSON ``{"board": B, "counter": N, "config": {...}}``. It must name this
board and a counter above the last one used (``lock.json`` remembers it: a used file
cannot be replayed); its config is merged into ``config.json`` (validated), the lock
follows its ``production``, and the file is removed. Any failure is journaled (0x71) and
changes nothing.

Context: boot (main.py), once. RAM: the signed file while it is checked (< 2 KB).
"""

import json
import os

import bootslot
import config_store
import params

LOCK = "lock.json"
SIGNED = "config.signed"


def _read(p):
    try:
        with open(p) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def check_signed(root, text, board, last_counter):
    """``(config dict, counter, None)`` when ``text`` (bytes) is a valid signed config for
    ``board`` above ``last_counter``, else ``(None, None, reason)``."""
    out = [None]
    for _ in check_signed_steps(root, text, board, last_counter, out):
        pass
    return out[0]


def check_signed_steps(root, text, board, last_counter, out):
    """Generator form of ``check_signed`` (the link's update service runs it as a task):
    yields within the signature check; ``out[0]`` is its result when it ends."""
    import binascii
    import hashlib

    from services import ed25519, update

    out[0] = None, None, "signed config: no 128-digit signature line"
    nl = text.find(b"\n")
    if nl != 128:
        return
    try:
        sig = binascii.unhexlify(text[:128])
        doc = json.loads(text[129:])
    except ValueError as e:
        out[0] = None, None, "signed config does not parse: %s" % e
        return
    key = update.read_key(root)
    if key is None:
        out[0] = None, None, "signed config: the board has no update key"
        return
    ok = [False]
    yield from ed25519.verify_steps(key, sig, hashlib.sha256(text[129:]).digest(), ok)
    if not ok[0]:
        out[0] = None, None, "signed config: signature does not verify with the board's key"
    elif not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        out[0] = None, None, "signed config: no config object"
    elif doc.get("board") != board:
        out[0] = None, None, "signed config is for board '%s', this board is '%s'" % (
            doc.get("board"), board)
    elif not isinstance(doc.get("counter"), int) or doc["counter"] <= last_counter:
        out[0] = None, None, "signed config: counter %r not above the last used %d (replay)" % (
            doc.get("counter"), last_counter)
    else:
        out[0] = doc["config"], doc["counter"], None


def last_counter(root=""):
    """The counter of the last signed config applied (0: none)."""
    return (_read(root + LOCK) or {}).get("unlock_counter", 0)


def apply(app, root=""):
    """Apply a signed config if there is one, then lock when production says so."""
    st = _read(root + LOCK) or {"production": 0, "unlock_counter": 0}
    j = app.journal
    try:
        with open(root + SIGNED, "rb") as f:
            text = f.read(4096)
    except OSError:
        text = None
    if text is not None:
        from services import update

        cfg, ctr, why = check_signed(root, text, update.board_name(root),
                                     st.get("unlock_counter", 0))
        if cfg is not None:
            merged = config_store.merged(root)
            merged.update(cfg)
            errors = config_store.save(merged, root)
            if errors:
                why = "signed config rejected: %s" % "; ".join(errors)
            else:
                held, _ = params.validate(merged)
                app.held["production"] = held["production"]
                st = {"production": held["production"], "unlock_counter": ctr}
                bootslot.write_atomic(root + LOCK, json.dumps(st))
                j.add(0, "lockdown", "", "SIGNED_CONFIG", "counter %d production %d" % (
                    ctr, held["production"]))
        if why:
            j.fault(0, "0x71", why)
        try:
            os.remove(root + SIGNED)
        except OSError:
            pass
    if app.held.get("production", 0) == 1 and not st.get("production"):
        st["production"] = 1
        bootslot.write_atomic(root + LOCK, json.dumps(st))
    locked = st.get("production") == 1
    app.locked = locked
    if locked:
        lock_console()
        j.add(0, "lockdown", "", "PRODUCTION", "console closed")
    return locked


def lock_console():
    """Ctrl-C off; the REPL off the UART where the port allows."""
    try:
        import micropython

        micropython.kbd_intr(-1)
    except (ImportError, AttributeError):
        pass
    dupterm = getattr(os, "dupterm", None)
    if dupterm is not None:
        try:
            dupterm(None)
        except (OSError, TypeError, ValueError):
            pass
