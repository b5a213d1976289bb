"""The engine is usable without a screen: it imports with PySide6 and pyqtgraph unavailable and
never imports the app; the app is the only place Qt appears."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("PySide6", "pyqtgraph", "app", "shiboken6")


def test_engine_imports_with_qt_blocked():
    """Every engine module imports in a fresh interpreter where importing Qt raises."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "engine").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = f"""
import builtins, importlib, sys
real = builtins.__import__
def guard(name, *a, **k):
    if name.split('.')[0] in {FORBIDDEN!r}:
        raise ImportError('blocked: ' + name)
    return real(name, *a, **k)
builtins.__import__ = guard
for m in {modules!r}:
    importlib.import_module(m)
leaked = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]
assert not leaked, leaked
print(len({modules!r}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 15


def test_no_engine_source_names_qt_or_the_app():
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                if n.split(".")[0] in FORBIDDEN:
                    raise AssertionError(f"{path.relative_to(ROOT)} imports {n}")


def _imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` (a module of ``package``) imports: relative imports
    resolved, ``from pkg import name`` counted as ``pkg`` and ``pkg.name`` (which may be a module),
    at any depth of the file (a lazy import inside a function is an import too)."""
    parts = package.split(".")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def test_no_model_family_imports_another():
    """Shared model parts live in their own modules under engine/models/ (the interface in base,
    layers, the sequence machinery, the training orderings): a family module imports none of its
    siblings, and a shared module imports no family, so a family can change or go without the
    others noticing."""
    from engine.models import FAMILIES

    families = {cls.__module__ for cls in FAMILIES.values()}
    assert len(families) == len(FAMILIES) >= 8  # one module per family
    modules = [p for p in sorted((ROOT / "engine" / "models").glob("*.py")) if p.stem != "__init__"]  # the registry imports them all
    shared = {f"engine.models.{p.stem}" for p in modules} - families
    assert {"engine.models.base", "engine.models.layers", "engine.models.sequence", "engine.models.train_orderings"} <= shared
    for path in modules:
        wrong = sorted((_imported_modules(path.read_text(), "engine.models") & families) - {f"engine.models.{path.stem}"})
        assert not wrong, f"{path.relative_to(ROOT)} imports the family module(s) {', '.join(wrong)}"


def test_the_family_import_check_sees_every_kind_of_import():
    """The parser behind the check above resolves each way a module can name a sibling."""
    source = (
        "from .lstm import PixelLSTM\nfrom . import made\nimport engine.models.nade\n"
        "def f():\n    from ..models.pixelcnn import GatedPixelCNN\n    from engine.models.mlp import PixelMLP\n"
    )
    got = _imported_modules(source, "engine.models")
    for fam in ("lstm", "made", "nade", "pixelcnn", "mlp"):
        assert f"engine.models.{fam}" in got, fam
