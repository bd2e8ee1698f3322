"""The layering in docs/architecture.md, checked on the source: no upward imports, no cycles,
images reach models through the one imaging module (search/images/).

search  <-  indexer  <-  training  <-  cli
search  <-  ui       <-  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each product package may import from the others (besides itself).
ALLOWED = {
    "search": set(),
    "indexer": {"search"},
    "ui": {"search"},
    "training": {"search", "indexer"},
    "cli": {"search", "indexer", "training", "ui"},
}


def _imports(path: Path, package: str) -> set[str]:
    """Top-level product packages a module imports (relative imports resolve to its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found & set(ALLOWED)


def test_no_package_imports_a_layer_above_it():
    upward = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in _imports(path, package) - allowed - {package}:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_benchmark_only_code_lives_outside_the_product_packages():
    product = {p.name for package in ALLOWED for p in (ROOT / package).rglob("*.py")}
    assert "fmnist.py" not in product and (ROOT / "benchmarks" / "fmnist.py").exists()


def _top_level_imports(path: Path) -> set[str]:
    """Modules a file imports at its top level (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_images_reach_models_through_the_one_imaging_module():
    """search/images/ builds every DataLoader; the rest of search/ imports torch lazily only
    (the query path runs without torch), and search/images/ itself only in its torch parts."""
    builders, eager = [], []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            names = _top_level_imports(path)
            if "torch.utils.data.DataLoader" in names and rel != "search/images/loader.py":
                builders.append(rel)
            torch_parts = ("search/images/loader.py", "search/images/batch.py")
            if package == "search" and rel not in torch_parts:
                eager += [rel for n in names if n == "torch" or n.startswith("torch.")]
    assert not builders, "DataLoaders built outside search.images.loader: " + ", ".join(builders)
    assert not eager, "torch imported at import time in search/: " + ", ".join(eager)
