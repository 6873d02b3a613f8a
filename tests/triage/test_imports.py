"""The triage package stands on the core only: numpy, the inference API and the core modules; never the
archive, curation, scaling, the web service, training or torch (it runs on a rover-like envelope)."""

import ast
from pathlib import Path

import pytest

TRIAGE = Path(__file__).resolve().parents[2] / "marsvision" / "triage"
ALLOWED = ("preprocess", "model_file", "atomic", "errors", "files", "metrics", "inference", "data", "triage")
THIRD_PARTY = {"numpy", "tomli", "tomllib"}


def imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                out.add(f"marsvision.triage.{node.module or ''}".rstrip("."))
            elif node.level == 2:
                out.add(f"marsvision.{node.module}")
            else:
                out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted(TRIAGE.glob("*.py")), ids=lambda p: p.name)
def test_triage_imports_only_the_core(path):
    import sys

    for name in imported(path):
        top = name.split(".")[0]
        if top == "marsvision":
            assert name.split(".")[1] in ALLOWED, f"{path.name} imports {name}"
        else:
            assert top in THIRD_PARTY or top in sys.stdlib_module_names, f"{path.name} imports {name}"
