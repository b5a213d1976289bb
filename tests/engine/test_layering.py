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
