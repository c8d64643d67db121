"""The seams between services, checked on the import graph of every module (function-level imports included).

- no module of ``services/<a>/`` imports ``services.<b>`` (b ≠ a);
- ``shared/`` imports no service, except the command line, which uses a service only through its package's
  exported names (``from services.engineer import run_experiment``), never a module inside it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = Path("shared", "cli")


def modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imports_of(source: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names taken from it) for each import statement of a module."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, tuple(alias.name for alias in node.names)))
    return found


def violations(where: Path, source: str) -> list[str]:
    """What is wrong with the imports of the module at ``where`` (relative to the repository root)."""
    own = where.parts[1] if where.parts[0] == "services" else None
    wrong: list[str] = []
    for line, module, names in imports_of(source):
        parts = module.split(".")
        if parts[0] != "services" or len(parts) < 2 or parts[1] == own:
            continue
        if own is not None:
            wrong.append(f"{where}:{line} imports {module}: a service never imports another service")
        elif not where.is_relative_to(CLI):
            wrong.append(f"{where}:{line} imports {module}: shared code imports no service")
        elif len(parts) > 2 or not names:
            wrong.append(f"{where}:{line} imports {module}: the command line uses only a service's package")
        else:
            exported = set(getattr(importlib.import_module(module), "__all__", ()))
            wrong += [f"{where}:{line} takes {name} from {module}, which does not export it"
                      for name in names if name not in exported]
    return wrong


@pytest.mark.parametrize("folder", ["services", "shared"])
def test_no_module_crosses_a_service_boundary(folder: str) -> None:
    problems = [problem for path in modules(folder)
                for problem in violations(path.relative_to(ROOT), path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_violation() -> None:
    """The check is not vacuous: a researcher module that reaches into the engineer is caught."""
    where = Path("services", "researcher", "probe.py")
    source = "def f():\n    from services.engineer.checks import run_checks\n"
    assert violations(where, source) == [f"{where}:2 imports services.engineer.checks: a service never imports "
                                         "another service"]
    cli = Path("shared", "cli", "lab.py")
    assert violations(cli, "from services.engineer.trainer import train\n") == [
        f"{cli}:1 imports services.engineer.trainer: the command line uses only a service's package"]
    assert violations(cli, "from services.engineer import train\n") == [
        f"{cli}:1 takes train from services.engineer, which does not export it"]
    assert violations(Path("shared", "bus.py"), "import services.memory\n") == [
        "shared/bus.py:1 imports services.memory: shared code imports no service"]


def test_every_exported_name_of_a_public_face_exists() -> None:
    for init in sorted((ROOT / "services").glob("*/__init__.py")):
        package = importlib.import_module(f"services.{init.parent.name}")
        for name in getattr(package, "__all__", ()):
            assert getattr(package, name) is not None, f"services.{init.parent.name}.{name}"


def test_the_engineer_face_lists_what_it_loads() -> None:
    import services.engineer as engineer

    assert sorted(engineer.__all__) == sorted(engineer._EXPORTS)
