"""A/B firmware slots: which tree boots, chosen before any of it is imported.

    import bootslot
    bootslot.select()          # boot.py, first thing: sys.path now starts at the slot
    bootslot.path("board.json")   # a file of the running tree

On the board's filesystem (paths relative to its root; ``root`` prefixes them in tests):

- the root tree, as ``v2g flash`` writes it (slot ``r``: the factory tree, never written
  by an update; boot.py and main.py always run from here);
- ``slots/a/`` and ``slots/b/``: trees written by signed updates, each with its
  ``manifest.bin`` (bundle header + manifest + digest + signature, docs/update.md);
- ``slot.json``, the pointer: ``{"active": "b", "state": "trial" | "ok", "tries": 0|1,
  "digest": hex, "prev": "a", "prev_digest": hex, "version", "counter", "why"}``. It is
  the only thing that selects a tree, and it is replaced whole by a rename (``.tmp`` then
  rename; where a filesystem cannot rename over a file the old one is removed first, and
  a lone ``slot.json.tmp`` is then read instead);
- ``update_floor.json``: ``{"floor": N}``, the board's security counter; it only grows.

Boot rule (``select``), MCUboot's swap types in file form:
1. no pointer: the root tree;
2. ``state == "trial"`` with ``tries == 0``: mark ``tries = 1`` (written first), run the
   new tree in trial (MCUboot TEST); the supervisor confirms it after
   ``upd_confirm_s`` healthy (``services/update.py``: state ``ok``, PERM);
3. ``state == "trial"`` with ``tries == 1``: the trial boot ended without a confirm (a
   watchdog reset, a failed start, a power cut): back to ``prev`` (REVERT), and why;
4. the chosen slot is checked: its manifest's digest equals the pointer's, every file
   has its size and SHA-256, its counter is not below the floor; on any inconsistency the
   previous confirmed slot, else the root tree boots, and the pointer is rewritten with
   the reason.
Reasons land in ``booted["notes"]``; ``services/update.attach`` puts them in the event log.

Cost: one SHA-256 pass over the chosen tree per boot (C ``hashlib``; ~0.2 MB). RAM: the
manifest (a few KB) while checking, freed before the firmware is imported.
Context: boot (before hal), and the update service. No ``assert``; never raises.
"""

import json
import os
import sys

POINTER = "slot.json"
FLOOR = "update_floor.json"
SLOTS = "slots"
ROOT_SLOT = "r"
MANIFEST = "manifest.bin"
MAGIC = b"V2GU"
FORMAT = 1
HEADER = 12  # magic, u8 format, u8 0, u16 0, u32 manifest length
DIGEST = 32
SIG = 64
MAX_MANIFEST = 65536

booted = {"slot": ROOT_SLOT, "state": "ok", "notes": [], "version": None}


def slot_dir(root, slot):
    """The directory prefix of a slot's files ("" for the root tree)."""
    return root if slot == ROOT_SLOT else root + SLOTS + "/" + slot + "/"


def path(name, root=""):
    """``name`` in the running tree."""
    return slot_dir(root, booted["slot"]) + name


def write_atomic(p, text):
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, p)  # LittleFS: atomic, also over an existing file
    except OSError:
        try:
            os.remove(p)  # FAT cannot rename over a file: a lone .tmp is read then
        except OSError:
            pass
        os.rename(tmp, p)


def _read_json(p):
    try:
        with open(p) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _valid_pointer(d):
    if d is None or d.get("active") not in (ROOT_SLOT, "a", "b"):
        return False
    if d.get("state") not in ("ok", "trial") or d.get("tries") not in (0, 1):
        return False
    if d.get("prev") not in (None, ROOT_SLOT, "a", "b"):
        return False
    return True


def read_pointer(root=""):
    """The pointer dict, or None (no pointer, or none that parses and validates)."""
    for name in (POINTER, POINTER + ".tmp"):
        d = _read_json(root + name)
        if _valid_pointer(d):
            return d
    return None


def write_pointer(root, ptr):
    write_atomic(root + POINTER, json.dumps(ptr))


def read_floor(root=""):
    d = _read_json(root + FLOOR)
    v = d.get("floor") if d else 0
    return v if isinstance(v, int) and v > 0 else 0


def sha256_file(p, buf=None):
    """(size, 32-byte digest) of a file, or None when it cannot be read."""
    import hashlib

    buf = buf or bytearray(1024)
    mv = memoryview(buf)
    h = hashlib.sha256()
    size = 0
    try:
        with open(p, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
                size += n
    except OSError:
        return None
    return size, h.digest()


def _hex(b):
    import binascii

    return binascii.hexlify(b).decode()


def _name_ok(name):
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith("/"):
        return False
    parts = name.split("/")
    if len(parts) > 2 or name == MANIFEST:
        return False
    for part in parts:
        if not part or part in (".", "..") or part.startswith("."):
            return False
        for c in part:
            if not (c.isalpha() or c.isdigit() or c in "_-."):
                return False
    return True


def parse_meta(blob):
    """``blob`` = header + manifest + digest + signature (the start of a bundle).
    Returns ``(manifest dict, meta length)``; raises ``ValueError`` naming what is wrong.
    Checks the form only: no digest, signature or board check here."""
    if len(blob) < HEADER:
        raise ValueError("shorter than the %d-byte header" % HEADER)
    if bytes(blob[:4]) != MAGIC:
        raise ValueError("not a bundle (magic %r, expected %r)" % (bytes(blob[:4]), MAGIC))
    if blob[4] != FORMAT or blob[5] or blob[6] or blob[7]:
        raise ValueError("bundle format %d not supported (this board reads %d)"
                         % (blob[4], FORMAT))
    mlen = int.from_bytes(bytes(blob[8:12]), "little")
    if mlen < 2 or mlen > MAX_MANIFEST:
        raise ValueError("manifest length %d outside 2..%d" % (mlen, MAX_MANIFEST))
    end = HEADER + mlen + DIGEST + SIG
    if len(blob) < end:
        raise ValueError("truncated: %d bytes, the header announces at least %d"
                         % (len(blob), end))
    try:
        m = json.loads(bytes(blob[HEADER:HEADER + mlen]))
    except (ValueError, UnicodeError) as e:
        raise ValueError("manifest is not JSON (%s)" % e) from None
    if not isinstance(m, dict):
        raise ValueError("manifest is not an object")
    for key, kind in (("board", str), ("version", str), ("counter", int),
                      ("min_counter", int), ("files", list)):
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise ValueError("manifest: '%s' missing or not a %s" % (key, kind.__name__))
    if not 0 <= m["min_counter"] <= m["counter"] < 1 << 31:
        raise ValueError("manifest: counters must satisfy 0 <= min_counter <= counter")
    arch = m.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise ValueError("manifest: 'arch' not a string")
    seen = set()
    for ent in m["files"]:
        if not (isinstance(ent, list) and len(ent) == 3 and _name_ok(ent[0])
                and isinstance(ent[1], int) and not isinstance(ent[1], bool)
                and 0 <= ent[1] < 1 << 24 and isinstance(ent[2], str) and len(ent[2]) == 64):
            raise ValueError("manifest: bad file entry %r" % (ent,))
        if ent[0] in seen:
            raise ValueError("manifest: file %s listed twice" % ent[0])
        seen.add(ent[0])
    if "main.py" not in seen and "main.mpy" not in seen:
        raise ValueError("manifest: no main.py in the tree")
    return m, end


def meta_digest(blob, manifest_len_end):
    """SHA-256 of header + manifest (what the signature signs)."""
    import hashlib

    return hashlib.sha256(bytes(blob[:manifest_len_end])).digest()


def read_meta(p):
    """(blob, manifest, end) of a slot's manifest.bin, or raises ValueError/OSError."""
    with open(p, "rb") as f:
        blob = f.read(HEADER)
        if len(blob) == HEADER:
            mlen = int.from_bytes(blob[8:12], "little")
            if mlen <= MAX_MANIFEST:
                blob += f.read(mlen + DIGEST + SIG)
    m, end = parse_meta(blob)
    return blob, m, end


def check_slot(root, slot, digest_hex, floor=0):
    """None when ``slot`` is whole (manifest digest as recorded, every file's size and
    SHA-256, counter not below ``floor``), else the reason. The root tree is not checked
    (it has no manifest)."""
    if slot == ROOT_SLOT:
        return None
    d = slot_dir(root, slot)
    try:
        blob, m, end = read_meta(d + MANIFEST)
    except (OSError, ValueError) as e:
        return "slot %s: manifest unreadable (%s)" % (slot, e)
    mlen_end = end - DIGEST - SIG
    dg = meta_digest(blob, mlen_end)
    if dg != bytes(blob[mlen_end:mlen_end + DIGEST]) or _hex(dg) != digest_hex:
        return "slot %s: manifest digest differs from the pointer's" % slot
    if m["counter"] < floor:
        return "slot %s: security counter %d below the board's %d" % (slot, m["counter"],
                                                                       floor)
    buf = bytearray(1024)
    for name, size, sha in m["files"]:
        got = sha256_file(d + name, buf)
        if got is None:
            return "slot %s: %s missing" % (slot, name)
        if got[0] != size or _hex(got[1]) != sha:
            return "slot %s: %s differs from its manifest (size or SHA-256)" % (slot, name)
    return None


def _reset_cause():
    cause = None
    try:
        cause = os.getenv("V2G_RESET_CAUSE")  # the simulated board's wrapper says why
    except AttributeError:
        pass
    return cause


def select(root="", set_path=True):
    """Choose the tree to boot (see the module docstring); put it first on ``sys.path``.
    Returns the slot name. Never raises: anything unexpected boots the root tree."""
    global booted
    notes = []
    try:
        slot, state, version = _select(root, notes)
    except Exception as e:  # noqa: BLE001 - the boot must go on: the factory tree
        notes.append("slot selection failed (%r): root tree" % (e,))
        slot, state, version = ROOT_SLOT, "ok", None
    booted = {"slot": slot, "state": state, "notes": notes, "version": version}
    if set_path and slot != ROOT_SLOT:
        sys.path.insert(0, (slot_dir(root, slot))[:-1])
    return slot


def _select(root, notes):
    ptr = read_pointer(root)
    if ptr is None:
        for name in (POINTER, POINTER + ".tmp"):
            try:
                os.stat(root + name)
                notes.append("%s unreadable: root tree" % name)
                break
            except OSError:
                pass
        return ROOT_SLOT, "ok", None
    floor = read_floor(root)
    if ptr["state"] == "trial":
        if ptr["tries"] >= 1:
            cause = _reset_cause()
            why = "trial of %s %s not confirmed%s%s; back to %s" % (
                ptr["active"], ptr.get("version"),
                " (reset: %s)" % cause if cause else "",
                " (%s)" % ptr["fail"] if ptr.get("fail") else "", ptr.get("prev"))
            notes.append(why)
            ptr = _back(ptr, why)
            write_pointer(root, ptr)
        else:
            ptr["tries"] = 1
            write_pointer(root, ptr)  # first: a reset from here on is a failed trial
    slot = ptr["active"]
    bad = check_slot(root, slot, ptr.get("digest"), floor)
    if bad is None:
        return slot, ptr["state"], ptr.get("version")
    notes.append(bad)
    prev = ptr.get("prev")
    if prev is not None and prev != slot and check_slot(root, prev, ptr.get("prev_digest"),
                                                        floor) is None:
        why = bad + "; back to %s" % prev
        ptr = _back(ptr, why)
    else:
        why = bad + "; root tree"
        ptr = {"active": ROOT_SLOT, "state": "ok", "tries": 0, "prev": None, "digest": None,
               "why": why}
    notes[-1] = why
    write_pointer(root, ptr)
    return ptr["active"], "ok", ptr.get("version")


def _back(ptr, why):
    """The pointer after a revert to the previous confirmed slot."""
    return {"active": ptr.get("prev") or ROOT_SLOT, "state": "ok", "tries": 0, "prev": None,
            "digest": ptr.get("prev_digest"), "version": ptr.get("prev_version"),
            "counter": ptr.get("prev_counter"), "why": why}


def trial_failed(reason, root=""):
    """main.py: the trial tree failed to start; record why (the next boot reverts)."""
    ptr = read_pointer(root)
    if ptr is not None and ptr["state"] == "trial":
        ptr["fail"] = str(reason)[:120]
        try:
            write_pointer(root, ptr)
        except OSError:
            pass


def in_trial():
    return booted["state"] == "trial"
