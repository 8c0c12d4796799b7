"""No test module imports from another test module or from a conftest: shared helpers live in tests/support/.

Parsed with the AST (not imported), so a module that fails to import is still checked."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "bench", "robustness")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _imported(path: Path, tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import``/``from ... import`` in *path* names, relative imports resolved."""
    package = _module_name(path).split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is not None:
                out.append((node.lineno, module))
            # from package import name: the name may be a module of that package
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def _forbidden(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module.startswith("tests") and (last.startswith("test_") or last == "conftest")


def test_no_module_imports_a_test_module_or_conftest() -> None:
    offenders = []
    for root in SCANNED:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            offenders += [f"{path.relative_to(REPO)}:{line}: {module}" for line, module in _imported(path, tree)
                          if _forbidden(module)]
    assert not offenders, "import shared helpers from tests.support instead:\n" + "\n".join(offenders)


def test_the_check_sees_relative_and_absolute_forms() -> None:
    here = REPO / "tests" / "integration" / "test_x.py"
    src = ("from .test_playback_sipp import a\nfrom .conftest import b\nfrom ..support.audio import c\n"
           "import tests.unit.test_rooms\nfrom tests.integration import test_api\nfrom tests.support import sipp\n")
    found = [m for _, m in _imported(here, ast.parse(src))]
    assert sorted({m for m in found if _forbidden(m)}) == [
        "tests.integration.conftest", "tests.integration.test_api", "tests.integration.test_playback_sipp",
        "tests.unit.test_rooms"]
