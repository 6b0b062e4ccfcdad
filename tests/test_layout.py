"""The README's Layout table names every module and package of memp_cli, and nothing that is gone."""

from __future__ import annotations

import re

from conftest import ROOT


def test_layout_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    named = set(re.findall(r"`([a-z_]+(?:\.py|/))`", layout))
    package = ROOT / "memp_cli"
    tree = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    tree |= {p.name + "/" for p in package.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert tree - named == set(), "modules the README's Layout does not name"
    assert named - tree == set(), "names in the README's Layout that are not in memp_cli/"
