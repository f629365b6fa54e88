"""The shape of the package: modules and classes a newcomer can hold in their head.

Limits (issue 16): a module under ``sync/`` has at most 600 lines and a
class at most 300. The layer rules themselves (which folder may import
which) are import-linter contracts in ``pyproject.toml``, checked by
``lint-imports`` in ``.ci/run`` and by the last test here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sync"
MODULE_LINES = 600
CLASS_LINES = 300


def oversized(root: Path) -> list[str]:
    """Every module over MODULE_LINES and class over CLASS_LINES under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(root.parent)
        lines = len(source.splitlines())
        if lines > MODULE_LINES:
            found.append(f"{where}: {lines} lines (limit {MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > CLASS_LINES:
                    found.append(f"{where}: class {node.name}, {size} lines (limit {CLASS_LINES})")
    return found


def test_modules_and_classes_stay_within_their_limits() -> None:
    assert oversized(PACKAGE) == []


def test_the_limits_are_measured_as_written(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(CLASS_LINES))
    (package / "big.py").write_text(f"class Big:\n{body}\n")
    (package / "long.py").write_text("x = 1\n" * (MODULE_LINES + 1))
    (package / "fine.py").write_text("x = 1\n" * MODULE_LINES)
    assert oversized(package) == [
        f"pkg/big.py: class Big, {CLASS_LINES + 1} lines (limit {CLASS_LINES})",
        f"pkg/long.py: {MODULE_LINES + 1} lines (limit {MODULE_LINES})",
    ]


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: pip install '.[test]' installs import-linter")
    result = subprocess.run(
        [lint, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support/ or in fixtures (conftest.py),
    never in a test module another one imports."""
    tests = PACKAGE.parent / "tests"
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(
                n.rsplit(".", 1)[-1].startswith("test_") and n.startswith("tests.") for n in names
            ):
                found.append(f"{path.relative_to(tests.parent)}:{node.lineno}")
    assert found == []
