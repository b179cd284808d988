"""``v2g config``: push, show and pull the board's device config.

    v2g config push FILE.yaml --port P [--kind device|thermal] [--restart]
    v2g config show --port P
    v2g config pull --port P --out FILE.yaml
    v2g config push-signed FILE --link P     # a signed config over the link

FILE.yaml is a flat mapping ``name: number`` in the units of the firmware's parameter
table (``firmware/params.py``: the one place limits live), e.g.::

    f_nom_hz: 50                 # Hz, 50..60
    enter_service_delay_s: 20.0  # s, 0.0..600.0

push: the file is validated on the host against the parameter table, imported from
``firmware/`` under CPython: every problem at once, each naming file, line, key, value and
the allowed range; exit 2 and nothing sent when any. Then it is sent as JSON and written
atomically (``config.json.tmp`` renamed over ``config.json``), and the board validates it
again with its own ``params.validate`` (the flashed firmware may differ from this
checkout). When the board rejects it, the previous ``config.json`` is put back (or the new
one removed when there was none) and the command exits 2 with the board's reasons. The
config takes effect at the next boot of the controller (``--restart`` restarts it now).

show: the config in force in the running controller (``_app.held``; the stored
``config.json`` when no controller runs), as YAML with units, ranges and defaults in
comments. pull: the stored ``config.json`` as the same YAML (keys not in it are at their
defaults), written atomically to ``--out``.

push-signed: a signed config (``v2g sign-config``; e.g. ``production=0``, the one way out
of production mode) over the board's link (``v2g.link.service``): the board checks its
signature, board and counter at once (exit 1 with its reason when it refuses, nothing
stored), stores it as ``config.signed`` and restarts; the boot applies it.

Kinds: ``device`` (``config.json``) now; ``thermal`` (``thermal.conf``) is reserved:
``--kind thermal``, or a FILE named ``*.conf``, is refused until the thermal model has its
parameter table.

Context: host only.
"""

import ast
import json
import os
import tempfile
from pathlib import Path

from v2g.common import runtime
from v2g.board.console import BoardLink
from v2g.common.errors import UsageError

KINDS = {"device": "config.json", "thermal": "thermal.json"}
THERMAL_PREFIXES = ("th_", "fan_")  # the keys a thermal.conf may hold


def add_arguments(p):
    sub = p.add_subparsers(dest="config_action", metavar="ACTION")
    push = sub.add_parser("push", help="validate a YAML config and store it on the board",
                          description="Validate FILE.yaml against the firmware's parameter "
                                      "table, store it on the board as config.json, and have "
                                      "the board validate it again.")
    push.add_argument("file", metavar="FILE.yaml")
    push.add_argument("--port", required=True, help="serial port of the board")
    push.add_argument("--kind", choices=sorted(KINDS),
                      help="config kind (default: from the file name; *.conf is thermal)")
    push.add_argument("--restart", action="store_true",
                      help="restart the board so the new config takes effect now")
    push.set_defaults(_config=run_push)
    show = sub.add_parser("show", help="print the config in force on the board, as YAML")
    show.add_argument("--port", required=True, help="serial port of the board")
    show.set_defaults(_config=run_show)
    pull = sub.add_parser("pull", help="copy the board's stored config.json to a YAML file")
    pull.add_argument("--port", required=True, help="serial port of the board")
    pull.add_argument("--out", required=True, metavar="FILE.yaml")
    pull.set_defaults(_config=run_pull)
    signed = sub.add_parser("push-signed", help="send a signed config (`v2g sign-config`) "
                            "over the link and restart the board (production mode)")
    signed.add_argument("file", metavar="FILE", help="a signed config from `v2g sign-config`")
    signed.add_argument("--link", required=True, metavar="PORT",
                        help="the board's link port, or a running daemon's service socket")
    signed.set_defaults(_config=_run_signed)


def _run_signed(args):
    from v2g.link import service

    return service.run_signed_config(args)


def run(args):
    handler = getattr(args, "_config", None)
    if handler is None:
        raise UsageError("give an action: push, show, pull or push-signed")
    return handler(args)


def params_module():
    """The firmware's parameter table, imported under CPython."""
    runtime.import_firmware_cpython()
    import params

    return params


# ---- host-side parsing and validation ----

def _key_lines(text):
    """{top-level key: line number} of a YAML mapping (for error messages)."""
    import yaml

    lines = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if isinstance(k, yaml.ScalarNode):
                lines.setdefault(k.value, k.start_mark.line + 1)
    return lines


def load_yaml(path):
    """Parse and validate a device config file; returns ``{name: number}``. Raises one
    ``UsageError`` listing every problem."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("%s: no such file" % path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError("%s: cannot read: %s" % (path, e)) from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = " line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise UsageError("%s%s: not valid YAML: %s" % (path, where,
                                                      getattr(e, "problem", None) or e)) from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise UsageError("%s: the top level must be a mapping 'name: number' (parameters of "
                         "firmware/params.py), not %s" % (path, type(cfg).__name__))
    errors = validate(cfg, path, _key_lines(text))
    if errors:
        raise UsageError("%s: %d problem%s; nothing was sent:\n  %s"
                         % (path, len(errors), "" if len(errors) == 1 else "s",
                            "\n  ".join(errors)))
    return cfg


def validate(cfg, path, key_lines=None):
    """Every problem of ``cfg`` as ``"FILE line N: key 'k': value v outside lo..hi unit"``."""
    params = params_module()
    key_lines = key_lines or {}
    bad_keys = [k for k in cfg if not isinstance(k, str)]
    errors = ["%s: key %r is not a parameter name" % (path, k) for k in bad_keys]
    clean = {k: v for k, v in cfg.items() if isinstance(k, str)}
    _, errs = params.validate(clean)
    for msg in errs:
        line = None
        for k in clean:
            if ("'%s'" % k) in msg:
                line = key_lines.get(k)
                break
        errors.append("%s%s: %s" % (path, " line %d" % line if line else "", msg))
    return errors


def kind_of(path, kind):
    if kind:
        return kind
    return "thermal" if str(path).endswith(".conf") else "device"


# ---- YAML out ----

def to_yaml(values, params, header=()):
    """``{name: number}`` as YAML lines with unit, range, default and doc comments, in
    the table's order; unknown names last."""
    lines = ["# %s" % h for h in header]
    rows = [r for r in params.TABLE if r[params.NAME] in values]
    width = max([len(r[params.NAME]) for r in rows] + [1])
    for r in rows:
        name = r[params.NAME]
        v = values[name]
        d = r[params.DECIMALS]
        text = ("%d" % v) if d == 0 else ("%.*f" % (d, v))
        note = params.describe_range(r)
        dflt = r[params.DEFAULT]
        if abs(v - dflt) > 1e-12:
            note += ", default %s" % (("%d" % dflt) if d == 0 else "%.*f" % (d, dflt))
        lines.append("%-*s  # %s - %s" % (width + 12, "%s: %s" % (name, text), note,
                                           r[params.DOC]))
    for name in sorted(set(values) - {r[params.NAME] for r in rows}):
        lines.append("%s: %s  # not in this firmware's parameter table" % (name,
                                                                          json.dumps(values[name])))
    return "\n".join(lines) + "\n"


def held_to_numbers(held, params):
    return {r[params.NAME]: params.to_number(r, held[r[params.NAME]])
            for r in params.TABLE if r[params.NAME] in held}


# ---- commands ----

_BOARD_VALIDATE = """
import json, params, config_store
_c = config_store.merged('')
_h, _e = params.validate(_c)
if not _e:
    import app
    _e = app.board_errors(app.load_board(), _h)
print(repr(_e))
del _c, _h, _e
"""

_FILE_EXISTS = "import os\ntry:\n os.stat(%r)\n print(1)\nexcept OSError:\n print(0)"


def run_push(args):
    kind = kind_of(args.file, args.kind)
    cfg = load_yaml(args.file)
    if kind == "thermal":
        others = sorted(k for k in cfg if not str(k).startswith(THERMAL_PREFIXES))
        if others:
            raise UsageError("%s: a thermal config holds only th_* and fan_* keys; not: %s "
                             "(push those in the device config); nothing was sent"
                             % (args.file, ", ".join(others)))
    text = json.dumps(cfg, sort_keys=True).encode()
    target = KINDS[kind]
    with BoardLink(args.port) as link:
        had = int(link.exec(_FILE_EXISTS % target, what="checking %s" % target).strip() or 0)
        previous = link.read(target) if had else None
        link.write_atomic(target, text)
        out = link.exec(_BOARD_VALIDATE, what="validating %s on the board" % target)
        errors = ast.literal_eval(out.decode("utf-8", "replace").strip())
        if errors:
            if previous is not None:
                link.write_atomic(target, previous)
                restored = "the previous %s was restored" % target
            else:
                link.remove(target)
                restored = "%s was removed (there was none before)" % target
            raise UsageError("%s: the board rejected it (its firmware's parameter table "
                             "differs from this checkout's?); %s:\n  %s"
                             % (args.file, restored, "\n  ".join(errors)))
        if args.restart:
            link.soft_reset()
    print("config: %s -> %s on %s (%d keys), validated by the board; %s"
          % (args.file, target, args.port, len(cfg),
             "board restarted" if args.restart else
             "takes effect at the next restart of the board (--restart restarts it now)"))
    return 0


_SHOW = """
import json
def _cfg():
    a = globals().get('_app')
    if a is None:
        import sys
        m = sys.modules.get('main')
        a = getattr(m, '_app', None) if m else None
    if a is not None:
        return {'source': 'running', 'held': a.held}
    try:
        with open(%r) as f:
            return {'source': 'file', 'config': json.load(f)}
    except OSError:
        return {'source': 'none'}
print(json.dumps(_cfg()))
del _cfg
"""


def run_show(args):
    params = params_module()
    with BoardLink(args.port) as link:
        out = link.exec(_SHOW % KINDS["device"], what="reading the config in force")
    got = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    if got["source"] == "running":
        values = held_to_numbers(got["held"], params)
        head = ["config in force in the running controller on %s" % args.port]
    else:
        held, errors = params.validate(got.get("config", {}))
        values = held_to_numbers(held, params)
        head = ["no controller running on %s: %s" % (
            args.port, "its stored config.json" if got["source"] == "file"
            else "no config.json: table defaults")]
        head += ["config.json problem: %s" % e for e in errors]
    print(to_yaml(values, params, head), end="")
    return 0


def run_pull(args):
    params = params_module()
    out_path = Path(args.out)
    if not out_path.parent.is_dir():
        raise UsageError("--out %s: directory %s does not exist" % (out_path, out_path.parent))
    target = KINDS["device"]
    with BoardLink(args.port) as link:
        had = int(link.exec(_FILE_EXISTS % target, what="checking %s" % target).strip() or 0)
        data = link.read(target) if had else b"{}"
    try:
        cfg = json.loads(data.decode("utf-8"))
    except ValueError as e:
        cfg = {}
        head = ["the board's %s is not valid JSON (%s): all defaults" % (target, e)]
    else:
        head = ["%s from %s; parameters not listed are at their defaults" % (target, args.port)
                if had else "%s has no %s: all parameters at their defaults" % (args.port,
                                                                                 target)]
    text = to_yaml(cfg, params, head)
    fd, tmp = tempfile.mkstemp(prefix="." + out_path.name + ".", dir=str(out_path.parent))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out_path)
    print("config: %s of %s -> %s (%d keys)" % (target, args.port, out_path, len(cfg)))
    return 0
