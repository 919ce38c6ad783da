"""The house rules, so they hold from now on: the pure layer imports nothing stateful (lazy
imports included), and no module reaches into another's private names."""

import ast
import pathlib

import optim_jax

PACKAGE = pathlib.Path(optim_jax.__file__).parent
# Public addresses of stateful modules under torch's paths, and the package's re-exports.
FACADES = {"__init__.py", "lr_scheduler.py", "swa_utils.py"}


def imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def pure_modules() -> list[pathlib.Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if "stateful" not in p.relative_to(PACKAGE).parts and p.name not in FACADES]


def test_the_pure_layer_imports_nothing_stateful():
    offenders = {
        str(path.relative_to(PACKAGE)): module
        for path in pure_modules()
        for module, names in imports(path)
        if module.startswith("optim_jax.stateful")
        or (module == "optim_jax" and "stateful" in names)
    }
    assert pure_modules() and not offenders, offenders


def private_uses(path: pathlib.Path) -> list[str]:
    """``from optim_jax.x import _name`` and ``x._name`` for a module ``x`` imported from
    optim_jax."""
    tree = ast.parse(path.read_text())
    modules, uses = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optim_jax"):
            for alias in node.names:
                if alias.name.startswith("_") and alias.name != "__all__":
                    uses.append(f"from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            uses.append(f"{node.value.id}.{node.attr}")
    return uses


def test_no_private_name_is_used_across_modules():
    offenders = {str(p.relative_to(PACKAGE)): private_uses(p) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
