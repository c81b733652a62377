"""The layering rules, checked on the import statements of every module (parsed with ``ast``, nothing imported)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tinycc": "tinycc", "ir": "tinycc.ir", "plugins": "tinycc.plugins", "backends": "tinycc.backends"}
APPLICATIONS = ("tinycc.plugins.applications",)
ROLES = ("frontends", "passes", "deployments", "targets", "applications")
# backend-neutral modules of backends/ an application may use (the demo dump it compares, the interface)
BACKEND_NEUTRAL = ("tinycc.backends.demo", "tinycc.backends.base")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package] + parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the module (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from . import x` imports the module x
            out += [(node.lineno, f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod) for a in node.names]
    return out


def _violations(rule) -> list[str]:
    bad = []
    for name, path in MODULES.items():
        for line, mod in _imports(name, path):
            why = rule(name, mod)
            if why:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {mod} ({why})")
    return bad


def _under(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def test_the_import_parser_sees_relative_imports() -> None:
    """The oracle itself: known imports of known modules are found and resolved."""
    imports = {m for _, m in _imports("tinycc.backends.c", MODULES["tinycc.backends.c"])}
    assert {"tinycc.backends.base", "tinycc.errors", "tinycc.backends.c.cmsis_nn"} <= imports
    assert "tinycc.ir.graph" in {m for _, m in _imports("tinycc.deploy.learning", MODULES["tinycc.deploy.learning"])}


def test_ir_imports_nothing_of_tinycc() -> None:
    assert _violations(lambda n, m: "ir imports only the ir" if _under(n, "tinycc.ir") and _under(m, "tinycc")
                       and not _under(m, "tinycc.ir") else "") == []


def test_backends_never_import_plugins_or_the_driver() -> None:
    def rule(n: str, m: str) -> str:
        if _under(n, "tinycc.backends") and (_under(m, "tinycc.plugins") or m in ("tinycc.driver", "tinycc.cli")):
            return "a backend imports a plugin or the driver"
        return ""

    assert _violations(rule) == []


def test_the_core_reaches_backends_and_plugins_only_through_the_registry() -> None:
    def rule(n: str, m: str) -> str:
        core = _under(n, "tinycc") and not any(_under(n, f"tinycc.{p}") for p in ("ir", "plugins", "backends"))
        if core and (_under(m, "tinycc.plugins") or _under(m, "tinycc.backends")):
            return "the core imports a plugin or backend by name"
        return ""

    assert _violations(rule) == []


def test_applications_call_the_public_api() -> None:
    def rule(n: str, m: str) -> str:
        if not any(_under(n, a) for a in APPLICATIONS):
            return ""
        if m in ("tinycc.driver", "tinycc.cli"):
            return "an application imports the driver (use tinycc.api)"
        if _under(m, "tinycc.backends") and m not in BACKEND_NEUTRAL:
            return "an application imports a backend (use tinycc.api.deploy / the registry)"
        return ""

    assert _violations(rule) == []
    for name, path in MODULES.items():
        if any(_under(name, a) for a in APPLICATIONS):
            calls = [node.func.id for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
            assert not [c for c in calls if c.endswith("Backend")], f"{path}: constructs a backend"


@pytest.mark.parametrize("pattern", [r"options: dict", r"options\.get\("])
def test_no_untyped_options_bag(pattern: str) -> None:
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in MODULES.values()
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert hits == []


def test_a_violation_is_reported() -> None:
    """The rules fail when broken: a rule that flags the known import of tinycc.errors by the ir-free core."""
    found = _violations(lambda n, m: "x" if n == "tinycc.driver" and m == "tinycc.errors" else "")
    assert len(found) == 1 and found[0].startswith("tinycc/driver.py:")


def test_plugins_hold_one_role_per_folder() -> None:
    """plugins/ has only role folders; a frontend, pass, deployment kind or board never imports an application
    or a backend (applications may use the backend-neutral modules)."""
    loose = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.suffix == ".py" and p.name != "__init__.py")
    assert loose == [], f"plugin modules outside a role folder: {loose}"
    assert sorted(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(ROLES)

    def rule(n: str, m: str) -> str:
        if not _under(n, "tinycc.plugins") or _under(n, "tinycc.plugins.applications"):
            return ""
        if _under(m, "tinycc.plugins.applications"):
            return "a frontend/pass/deployment/board imports an application"
        if _under(m, "tinycc.backends"):
            return "a frontend/pass/deployment/board imports a backend"
        return ""

    assert _violations(rule) == []


def test_every_package_says_what_lives_there() -> None:
    """Every folder's __init__.py starts with a docstring (what lives here, what it may import)."""
    missing = [str(p.relative_to(ROOT)) for name, p in MODULES.items() if p.name == "__init__.py"
               and not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []
