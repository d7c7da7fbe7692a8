"""The core, the sample-city generator and validation must never import qgis, Qt or torch."""
import ast
import os
import pkgutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PURE_PACKAGES = ("plugin/core", "plugin/samplecity", "plugin/validation", "plugin/lcz")
# torch reference implementations that only tests import (parity checks)
TEST_ONLY = {"plugin/lcz/reference_torch.py"}
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip", "processing", "torch")


def _modules():
    for pkg in PURE_PACKAGES:
        path = os.path.join(ROOT, pkg)
        if not os.path.isdir(path):
            continue
        yield pkg.replace("/", ".")
        for m in pkgutil.iter_modules([path]):
            if f"{pkg}/{m.name}.py" not in TEST_ONLY:
                yield f"{pkg.replace('/', '.')}.{m.name}"


def test_pure_modules_have_no_forbidden_import_statements():
    offenders = []
    for pkg in PURE_PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or os.path.relpath(path, ROOT) in TEST_ONLY:
                    continue
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names = [node.module]
                    offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_every_pure_module_loads_no_qgis_or_qt():
    modules = sorted(set(_modules()))
    assert "plugin.core.engine" in modules
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"pure modules pulled in: {out.stdout.strip()}"


def test_learning_package_never_imports_qgis_or_qt():
    """plugin/learning ships in the plugin and runs inside QGIS, but it is the torch layer: it
    may import torch, never qgis or Qt (the Processing algorithm and the dialog call it)."""
    qt = tuple(f for f in FORBIDDEN if f != "torch")
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "plugin", "learning")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                    and node.module else [])
                offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in qt]
    assert not offenders, offenders
