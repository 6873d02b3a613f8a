"""The package's architecture, checked from its source: no import circles, a torch-free core, no
experiments in the product. (That the ONNX path runs with torch blocked is tested in
inference/test_onnx_runtime.py.)"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGE = REPO / "marsvision"
# The core: top-level modules and these subpackages never import torch or training code ...
CORE_PACKAGES = ("marsvision.inference", "marsvision.data", "marsvision.evaluation")
# ... except, inside a function: the torch runtime when a .pt file is loaded, and the CLI, which imports
# only the module of the command it runs.
LAZY_TORCH = {"marsvision.inference.torch_runtime", "marsvision.cli"}
LAZY_TRAINING = {"marsvision.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            candidates = [f"{target}.{a.name}" for a in node.names]
            # ``from . import x``: x may be a module; otherwise the import is of ``target`` itself.
            found = [c for c in candidates if (REPO / (c.replace(".", "/") + ".py")).is_file()]
            out += [(t, id(node) in top) for t in (found or [target])]
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_circles():
    # Every import counts, inside functions and under TYPE_CHECKING too: a lazy circle is still a circle.
    graph = {m: {t for t, _ in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # A package's __init__ re-exporting its children is how packages work, not a circle.
    graph = {
        m: {t for t in ts if not m.startswith(t + ".") or MODULES[t].name != "__init__.py"} for m, ts in graph.items()
    }
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " → ".join(path[path.index(t) :] + [t]))
            if not state.get(t):
                visit(t, path + [t])
        state[m] = 2

    for m in MODULES:
        if not state.get(m):
            visit(m, [m])


CORE = sorted(m for m, p in MODULES.items() if p.parent == PACKAGE or m.startswith(CORE_PACKAGES))


@pytest.mark.parametrize("module", CORE)
def test_core_never_imports_torch_or_training(module):
    for target, top in imports(MODULES[module]):
        if target.startswith(("marsvision.training", "marsvision.export")):
            assert module in LAZY_TRAINING and not top, f"{module} imports {target}"
        if target.split(".")[0] in ("torch", "torchvision", "timm") or target.startswith("marsvision.nets"):
            assert module in LAZY_TORCH and not top, f"{module} imports {target}"


def test_package_never_imports_experiments():
    for module, path in MODULES.items():
        assert not any(t.split(".")[0] in ("experiments", "benchmarks") for t, _ in imports(path)), module
