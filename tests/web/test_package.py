"""The web layer's place: it sits on top (only the CLI imports it), and the wheel ships its page."""

import ast
from pathlib import Path

import pytest

from marsvision.web.routes.page import STATIC

REPO = Path(__file__).resolve().parents[2]


def test_nothing_below_the_web_layer_imports_it():
    """Lazy imports inside functions included: a module is below unless it is web's own or the CLI."""
    offenders = []
    for path in sorted((REPO / "marsvision").rglob("*.py")):
        rel = path.relative_to(REPO / "marsvision")
        if rel.parts[0] == "web" or rel == Path("cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            offenders += [f"{rel}: {n}" for n in names if n.startswith("marsvision.web") or ".web" in n]
    assert offenders == []


def test_the_wheel_ships_the_page():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["marsvision"]
    shipped = {p.relative_to(REPO / "marsvision") for g in globs for p in (REPO / "marsvision").glob(g)}
    page = {p.relative_to(REPO / "marsvision") for p in STATIC.iterdir()}
    assert {"index.html", "app.js", "review.js", "style.css"} <= {p.name for p in page} and page <= shipped
