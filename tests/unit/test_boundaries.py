"""The architecture's boundaries, checked on the source rather than hoped for."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QT_PACKAGES = ("PySide6", "PyQt5", "PyQt6", "qtpy", "shiboken6")


def qt_imports(source: str) -> list[str]:
    """Every Qt module a piece of Python source imports, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__"):
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        found += [n for n in names if n.split(".")[0] in QT_PACKAGES]
    return found


def test_the_scan_finds_qt_imports_in_any_form():
    source = "import os\ndef f():\n    from PySide6.QtGui import QImage\nimport PyQt5.QtCore as q\nimportlib.import_module('PySide6.QtWidgets')\n"
    assert sorted(qt_imports(source)) == ["PyQt5.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"]
    assert qt_imports("import numpy\nfrom engines.api import Request\n") == []


def test_nothing_under_engines_imports_qt():
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "engines").rglob("*.py"))
        if (found := qt_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_import_contracts_hold():
    """import-linter (contracts in pyproject.toml): engines never import Qt; the editor uses only
    engines.api and engines.registry."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_no_engine_runs_code_from_a_model_repository():
    """Model repositories can ship Python; Sandcastle never asks diffusers or transformers to run it."""
    for path in sorted((ROOT / "engines").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg in ("trust_remote_code", "custom_pipeline"):
                raise AssertionError(f"{path.relative_to(ROOT)} passes {node.arg}")


def test_no_undefined_names_or_unused_imports():
    """ruff's pyflakes rules: an undefined name is a crash waiting in a code path no test reached."""
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "main.py", "editor", "engines", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
