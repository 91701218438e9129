"""The layers import in one direction only (docs/architecture.md).

``catalog`` <- ``publisher`` <- ``cli`` and ``catalog`` <- ``api`` <- ``cli``: a module may
import its own layer and the layers below it, never one above or beside it. Checked on the
source text (every ``import``/``from`` statement, including those inside functions), so a lazy
import in the wrong direction fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: layer -> the tessera_stac layers it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "catalog": {"catalog", "schemas"},
    "publisher": {"publisher", "catalog", "schemas"},
    "api": {"api", "catalog", "schemas"},
    "cli": {"cli", "publisher", "catalog", "api", "schemas"},
}


def imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, layer) of every ``tessera_stac.<layer>`` import in a Python file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tessera_stac":
                names = [f"tessera_stac.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tessera_stac" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in the wrong direction under ``root``, as 'file:line imports layer'."""
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, target in imported_layers(path):
                if target not in allowed:
                    bad.append(f"{path.relative_to(root)}:{line} imports {target}")
    return bad


def test_imports_go_one_way() -> None:
    assert layer_violations(ROOT) == []


@pytest.mark.parametrize(
    ("layer", "statement"),
    [
        ("catalog", "from tessera_stac.publisher.embeddings import cog"),
        ("api", "import tessera_stac.publisher.join.join"),
        ("publisher", "def f():\n    from tessera_stac.cli import main\n"),
        ("publisher", "from tessera_stac import api"),
    ],
)
def test_a_wrong_import_is_caught(tmp_path: Path, layer: str, statement: str) -> None:
    (tmp_path / layer).mkdir()
    (tmp_path / layer / "bad.py").write_text(statement + "\n")
    assert len(layer_violations(tmp_path)) == 1


def test_every_package_folder_is_a_layer() -> None:
    """A new top-level package must be given a place in ALLOWED (and in the doc)."""
    mapped = {
        line.split("=")[0].strip().strip('"').split(".")[1]
        for line in (ROOT / "pyproject.toml")
        .read_text()
        .split("package-dir = {")[1]
        .split("}")[0]
        .split(",")
    }
    assert mapped == set(ALLOWED)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for layer in ALLOWED:
        assert f"`{layer}/`" in doc


def test_every_subpackage_is_packaged() -> None:
    """A wheel holds only the packages pyproject lists: a new subfolder must be listed."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "tessera_stac." + ".".join(init.parent.relative_to(ROOT).parts)
        for layer in ALLOWED
        for init in (ROOT / layer).rglob("__init__.py")
    }
    assert found - listed == set()
