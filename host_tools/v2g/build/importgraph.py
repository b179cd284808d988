"""The project's import graph: circles and upward imports, for host, firmware and boards.

    python -m v2g.build.importgraph [--root REPO] [--edges]

Reads every module's syntax tree (imports at module level and inside functions alike;
nothing is imported or run) and reports:

- host package ``v2g``: each subpackage's imports of the others, and every import from a
  subpackage ranked above the importer in ``LAYERS`` (bottom first);
- firmware and boards: the board's flat module namespace (``firmware/*.py``, packages
  such as ``firmware/services/`` and ``boards/<name>/*.py``, as ``v2g flash`` lays them out
  on the board);
- circles (strongly connected groups of two or more modules) in both.

Exit 0 when there are no circles and no upward imports, 1 otherwise. ``--root`` points at
another checkout (for a before/after comparison). Context: host only.
"""

import argparse
import ast
import sys
from pathlib import Path

# Host subpackages, bottom first. A module may import from its own subpackage and from
# any subpackage listed before it; ``v2g`` itself (the version) from anywhere.
LAYERS = ("common", "build", "link", "board", "update", "targets", "sim", "grid", "gateway",
          "backend", "bench", "docs", "cli")


def _imports(path, package=None):
    """Absolute dotted names imported by the module at ``path`` (relative imports resolved
    against ``package``, the dotted package the module lives in)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = (package or "").split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(p for p in parts + ([base] if base else []) if p)
            out.add(base)
            out.update(base + "." + a.name for a in node.names if a.name != "*")
    return out


def _host_modules(root):
    pkg_dir = root / "host_tools" / "v2g"
    mods = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        rel = f.relative_to(pkg_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = ".".join(parts)
        else:
            package = ".".join(parts[:-1])
        if "mp" in parts[1:] or "shim" in parts[1:]:
            continue                        # scripts that run on MicroPython, not host code
        mods[".".join(parts)] = (f, package)
    return mods


def _resolve(name, known):
    """The longest known module that ``name`` names (``v2g.sim.runner.simulate`` ->
    ``v2g.sim.runner``), or None."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def host_graph(root):
    mods = _host_modules(root)
    graph = {}
    for name, (f, package) in mods.items():
        deps = set()
        for imp in _imports(f, package):
            target = _resolve(imp, mods) if imp.startswith("v2g") else None
            if target and target != name and not name.startswith(target + "."):
                deps.add(target)
        graph[name] = deps
    return graph


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward(graph):
    """(importer, imported) pairs that break ``LAYERS``."""
    bad = []
    for a, deps in sorted(graph.items()):
        la = _layer(a)
        for b in sorted(deps):
            lb = _layer(b)
            if b == "v2g" or la == lb:
                continue
            if la not in LAYERS or lb not in LAYERS or LAYERS.index(lb) > LAYERS.index(la):
                bad.append((a, b))
    return bad


def board_graph(root):
    """Module graph of the board's flat namespace: firmware plus each board's folder
    (one graph per board, merged; board folders never import each other)."""
    fw = root / "firmware"
    files = {}
    for f in sorted(fw.rglob("*.py")):
        rel = f.relative_to(fw).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = (f, ".".join(list(rel.parts)[:-1]))
    graph = {}
    boards = sorted(p for p in (root / "boards").iterdir() if p.is_dir())
    for board in boards:
        local = dict(files)
        for f in sorted(board.glob("*.py")):
            local[f.stem] = (f, "")
        for d in sorted(p for p in (root / "boards").iterdir()
                        if p.is_dir() and not (p / "board.json").exists()):
            for f in sorted(d.glob("*.py")):        # shared driver folders
                local[f.stem] = (f, "")
        for name, (f, package) in local.items():
            key = name if f.is_relative_to(fw) else "%s/%s" % (f.parent.name, name)
            deps = graph.setdefault(key, set())
            for imp in _imports(f, package):
                target = _resolve(imp, local)
                if target and target != name:
                    tf = local[target][0]
                    deps.add(target if tf.is_relative_to(fw)
                             else "%s/%s" % (tf.parent.name, target))
    return graph


def circles(graph):
    """Strongly connected groups of >= 2 modules (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layer_matrix(graph):
    """{importer subpackage: {imported subpackage: number of module edges}}."""
    m = {}
    for a, deps in graph.items():
        for b in deps:
            la, lb = _layer(a) or "v2g", _layer(b) or "v2g"
            if la != lb:
                row = m.setdefault(la, {})
                row[lb] = row.get(lb, 0) + 1
    return m


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m v2g.build.importgraph",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[3],
                   help="repository root (default: this checkout)")
    p.add_argument("--edges", action="store_true", help="also list every module edge")
    args = p.parse_args(argv)
    host = host_graph(args.root)
    board = board_graph(args.root)
    problems = 0
    print("host package v2g: %d modules, %d imports between them"
          % (len(host), sum(len(d) for d in host.values())))
    for la, row in sorted(layer_matrix(host).items()):
        print("  %-8s -> %s" % (la, ", ".join("%s (%d)" % kv for kv in sorted(row.items()))))
    for a, b in upward(host):
        print("  UPWARD  %s imports %s" % (a, b))
        problems += 1
    for name, graph in (("host", host), ("board (firmware + boards/*)", board)):
        found = circles(graph)
        print("%s circles: %d" % (name, len(found)))
        for group in found:
            print("  CIRCLE  " + " <-> ".join(group))
        problems += len(found)
    if args.edges:
        for name, graph in (("host", host), ("board", board)):
            for a in sorted(graph):
                for b in sorted(graph[a]):
                    print("%s edge %s -> %s" % (name, a, b))
    print("problems: %d" % problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
