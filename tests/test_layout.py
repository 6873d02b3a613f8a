"""The package's architecture, checked from its source: layers that only import downwards, no import
circles, a torch-free core, no experiments in the product. (That the ONNX path runs with torch blocked
is tested in inference/test_onnx_runtime.py.)"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGE = REPO / "marsvision"
# The core: top-level modules and these subpackages never import torch or training code ...
CORE_PACKAGES = ("marsvision.inference", "marsvision.data", "marsvision.evaluation", "marsvision.triage")
# ... except, inside a function: the torch runtime when a .pt file is loaded, and the CLI, which imports
# only the module of the command it runs.
LAZY_TORCH = {"marsvision.inference.torch_runtime", "marsvision.cli"}
LAZY_TRAINING = {"marsvision.cli"}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = REPO) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file, ``root`` the repository."""
    name = module_name(path, root)
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
            found = [c for c in candidates if (root / (c.replace(".", "/") + ".py")).is_file()]
            out += [(t, id(node) in top) for t in (found or [target])]
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

# The layers, from the top: a module may import its own layer and the layers below it, never one above,
# and that holds for every import, lazy ones inside functions included. A new package takes its place
# here (triage sits beside training/export/evaluation); "marsvision" is the core:
# the top-level modules (preprocess, model_file, metrics, atomic, errors, files).
LAYERS = [
    ["marsvision.cli"],
    ["marsvision.web"],
    ["marsvision.scale"],
    ["marsvision.curate"],
    ["marsvision.archive"],
    ["marsvision.training", "marsvision.export", "marsvision.evaluation", "marsvision.triage"],
    ["marsvision.head"],
    ["marsvision.inference"],
    ["marsvision.nets", "marsvision.data"],
    ["marsvision"],
]
# The package's own __init__ is its public face: it re-exports the inference API (load_model, …).
FACADE = "marsvision"


def layer_of(module: str) -> int:
    """Index in LAYERS of the layer that holds ``module`` (0 is the top)."""
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names if n != "marsvision"):
            return i
    assert module == "marsvision" or module.count(".") == 1, f"{module}: a package missing from LAYERS"
    return len(LAYERS) - 1


def upward_imports(modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """Every import of a higher layer, as "module -> target"."""
    found = []
    for module, path in modules.items():
        if module == FACADE:
            continue
        for target, _ in imports(path, root):
            if target.split(".")[0] == "marsvision" and layer_of(target) < layer_of(module):
                found.append(f"{module} -> {target}")
    return found


def test_layers_only_import_downwards():
    assert upward_imports(MODULES) == []


def test_every_package_has_a_layer():
    for module in MODULES:
        layer_of(module)  # asserts for a package that is not in LAYERS


def test_an_upward_import_fails_the_layer_check(tmp_path):
    # Synthetic modules at the head level: a lazy import of the archive (upward) and imports of the
    # inference layer and the core (downward).
    (tmp_path / "marsvision" / "head").mkdir(parents=True)
    bad = tmp_path / "marsvision" / "head" / "bad.py"
    bad.write_text(
        "from ..inference import predict\nfrom ..files import sha256_file\n\n\n"
        "def f():\n    from ..archive.db import Image\n    return Image\n"
    )
    assert upward_imports({"marsvision.head.bad": bad}, tmp_path) == ["marsvision.head.bad -> marsvision.archive.db"]


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
