"""Signed-update test helpers: a board filesystem in a folder (CPython runs the board-side
agent there), a key pair, trees and bundles.
"""

import hashlib  # noqa: F401 - tests use H.hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from v2g.update import bundle

BOARD = "sim"


def keypair(seed=1):
    """A deterministic Ed25519 key (tests only): (private key, public hex)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % seed).digest())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw).hex()
    return key, pub


def small_tree(tag="v1", sizes=(700, 1500, 3000, 256), extra=None):
    """A synthetic board tree: main.py, board.json, a package file and data files whose
    bytes depend on ``tag`` (so two tags differ in every file but board.json)."""
    tree = {"main.py": ("# main %s\nprint('hi')\n" % tag).encode(),
            "board.json": json.dumps({"name": BOARD}).encode()}
    for i, n in enumerate(sizes):
        name = "services/m%d.py" % i if i == 0 else "mod%d.mpy" % i
        seed = hashlib.sha256(("%s-%d" % (tag, i)).encode()).digest()
        tree[name] = (seed * (n // 32 + 1))[:n]
    if extra:
        tree.update(extra)
    return tree


def make_bundle(tree, key, version="1.0", counter=1, min_counter=None, board=BOARD):
    return bundle.build(tree, board, version, counter, min_counter, None, None, key)


def board_root(path, tree, pub_hex):
    """A board filesystem: the root tree (as `v2g flash` leaves it) and the update key.
    Returns the root prefix ("<path>/")."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in tree.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "update_key.pub").write_text(pub_hex + "\n")
    return str(root) + "/"


def snapshot(root):
    """{relative path: sha256} of every file under ``root`` (the board's whole state)."""
    out = {}
    base = Path(root)
    for p in sorted(base.rglob("*")):
        if p.is_file():
            out[p.relative_to(base).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def running_tree(root):
    """The files of the tree the board would boot now ({name: bytes}), per bootslot."""
    import bootslot

    slot = bootslot.select(root, set_path=False)
    d = Path(bootslot.slot_dir(root, slot))
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and (slot != "r" or not rel.startswith(("slots/", "slot.json",
                                                                 "update_", "upd."))):
            out[rel] = p.read_bytes()
    return slot, out


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def remove_tree(path):
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.remove(os.path.join(dirpath, f))
        for d in dirs:
            os.rmdir(os.path.join(dirpath, d))
