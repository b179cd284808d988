"""The repository documents itself: the generated parts of docs/ are current, every
document a file points at exists in the repository, and nothing cites a document that
lives outside it."""

import re
import subprocess

from v2g.common import paths
from v2g.docs import generate


def test_generated_docs_are_current(capsys):
    rc = generate.main(["--check"])
    assert rc == 0, capsys.readouterr().out


def test_generated_blocks_carry_the_tables():
    text = generate.FORMATS.read_text()
    assert "| `0x07` | GRID_INTEGRITY | ERROR |" in text
    assert "`ERROR 0x07 Grid Integrity Failure`" in text
    assert "`V2G-502`" in text
    assert "| 0 | STUCK |" in text and "| 4 | OPENING |" in text
    assert "`t_s,grid_theta_rad,theta_rad,f_hz,v_pos_pu,locked,v_a,v_b,v_c,i_a,i_b,i_c," in text
    assert '| `hang` | "tick" / "supervisor" / "link" |' in text
    params = generate.PARAMS.read_text()
    assert "| 23 | `i_max_pu` | pu | 0.10 | 1.10 | 1.00 |" in params


def test_stale_block_is_detected(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "formats.md"
    stale.write_text(generate.FORMATS.read_text().replace("GRID_INTEGRITY", "GRID_X", 1))
    monkeypatch.setattr(generate, "FORMATS", stale)
    assert generate.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out


def _tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=paths.REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [paths.REPO_ROOT / p for p in out]


def test_no_citation_of_documents_outside_the_repository():
    bad = []
    for f in _tracked("*.py", "*.md", "*.c", "*.sh", "Makefile", ".ci/run"):
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if re.search(r"\b(CONTRACTS|DESIGN)\.md\b", line):
                bad.append("%s:%d" % (f.relative_to(paths.REPO_ROOT), n))
    assert not bad, bad


def test_markdown_links_resolve():
    missing = []
    for f in _tracked("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", f.read_text()):
            if "://" in target:
                continue
            if not (f.parent / target).exists():
                missing.append("%s -> %s" % (f.relative_to(paths.REPO_ROOT), target))
    assert not missing, missing
