"""``v2g.build.importgraph``: the host package has no circle and no upward import, the
board's module namespace (firmware + boards) has no circle, and the checker does see
both when they are planted."""

import shutil

from v2g.build import importgraph
from v2g.common import paths


def test_this_checkout_is_clean(capsys):
    assert importgraph.main([]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "host circles: 0" in out and "problems: 0" in out


def _tree(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(paths.REPO_ROOT / "host_tools" / "v2g", root / "host_tools" / "v2g",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(paths.FIRMWARE_DIR, root / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(paths.BOARDS_DIR, root / "boards", ignore=shutil.ignore_patterns(
        "__pycache__", "scenarios"))
    return root


def test_planted_upward_import_and_circles_are_found(tmp_path, capsys):
    root = _tree(tmp_path)
    common = root / "host_tools" / "v2g" / "common" / "paths.py"
    common.write_text(common.read_text() + "\nfrom v2g.sim import runner  # planted\n")
    tick = root / "firmware" / "tick.py"
    tick.write_text(tick.read_text() + "\nimport supervisor  # planted\n")
    sup = root / "firmware" / "supervisor.py"
    sup.write_text(sup.read_text() + "\nimport tick  # planted\n")
    assert importgraph.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "UPWARD  v2g.common.paths imports v2g.sim.runner" in out
    assert "host circles: 1" in out          # paths -> sim.runner -> ... -> paths
    board_part = out.split("board (firmware + boards/*) circles:")[1]
    assert any("supervisor" in ln and "tick" in ln
               for ln in board_part.splitlines() if ln.strip().startswith("CIRCLE"))
