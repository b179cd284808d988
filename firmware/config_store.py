"""Device config on the board's flash: load with fallback, save atomically.

Files (board root): ``config.json`` (what ``v2g config push`` wrote) and
``config.good.json`` (the last config that validated, kept by the board). Both hold
``{name: number}`` in the parameter table's units. Writes go to a temp file that is
renamed over the target, so a power cut leaves either the old or the new file, never
half of one.

Boot rule: ``config.json`` if it parses and validates; else ``config.good.json``; else the
table defaults. The reason for every fallback is returned for the event log.

Context: boot and supervisor.
"""

import json
import os

import params

CONFIG = "config.json"
GOOD = "config.good.json"
THERMAL = "thermal.json"  # thermal.conf as pushed by ``v2g config push`` (th_*, fan_* keys)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.remove(path)  # FAT cannot rename over an existing file; LittleFS can
    except OSError:
        pass
    os.rename(tmp, path)


def _read(path):
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError("top level is not an object")
    return cfg


def _keep_good(root, cfg):
    """Record a config that validated as the last good one (only when it changed)."""
    try:
        if _read(root + GOOD) == cfg:
            return
    except (OSError, ValueError):
        pass
    try:
        write_atomic(root + GOOD, json.dumps(cfg))
    except OSError:
        pass  # a read-only or full flash must not stop the boot


def _thermal(root):
    """The thermal overlay ({} when there is none or it cannot be read)."""
    try:
        cfg = _read(root + THERMAL)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in cfg.items() if k.startswith("th_") or k.startswith("fan_")}


def merged(root=""):
    """``config.json`` with the thermal overlay on top, as the board would boot on it
    (for the board-side check of ``v2g config push``)."""
    try:
        cfg = _read(root + CONFIG)
    except (OSError, ValueError):
        cfg = {}
    cfg.update(_thermal(root))
    return cfg


def load(root="", overrides=None):
    """Return ``(held, cfg, notes)``: held ints for ``params``, the config numbers in
    force, and a list of fallback reasons (empty when ``config.json`` was used).
    ``overrides`` (a dict, e.g. a scenario's config) are validated on top."""
    notes = []
    chosen = {}
    for name in (CONFIG, GOOD):
        path = root + name
        if not _exists(path):
            if name == CONFIG:
                notes.append("no %s" % name)
            continue
        try:
            cfg = _read(path)
        except (OSError, ValueError) as e:
            notes.append("%s unreadable: %s" % (name, e))
            continue
        if name == CONFIG:
            cfg.update(_thermal(root))
        held, errors = params.validate(cfg)
        if errors:
            notes.append("%s rejected: %s" % (name, "; ".join(errors)))
            continue
        chosen = cfg
        if name == CONFIG:
            notes = []
            _keep_good(root, cfg)
        break
    if overrides:
        merged = dict(chosen)
        merged.update(overrides)
        held, errors = params.validate(merged)
        if errors:
            raise ValueError("; ".join(errors))
        chosen = merged
    held, errors = params.validate(chosen)
    return held, chosen, notes


def save(cfg, root=""):
    """Validate and store ``cfg`` as both the config and the last good one. Returns the
    list of errors; on errors nothing is written."""
    held, errors = params.validate(cfg)
    if errors:
        return errors
    text = json.dumps(cfg)
    write_atomic(root + CONFIG, text)
    write_atomic(root + GOOD, text)
    return []
