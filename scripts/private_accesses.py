"""Count accesses to private attributes of objects that are not our own.

    python scripts/private_accesses.py [-v] opto_adapters/autogen opto_adapters/dspy ...

Counted: ``obj._name`` (one leading underscore) where ``obj`` is not ``self``/``cls``/``super()``
(a subclass calling its base's hook is the framework's extension point), ``getattr/setattr/hasattr/
delattr(obj, "_name")``, and a ``"_name"`` key looked up in an object's ``vars()``/``__dict__``
(``vars(obj)["_name"]``, ``"_name" in vars(obj)``). Each is a place that breaks when a framework
renames its internals; the adapters keep them in their ``_compat.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and private(node.value)


def _namespace(node: ast.AST) -> bool:
    """``vars(x)``, ``x.__dict__``, or a name bound from one (``state = vars(x)``: any plain name counts)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "vars":
        return True
    return isinstance(node, ast.Attribute) and node.attr == "__dict__"


def accesses(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            ):
                continue
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Subscript) and _private_constant(node.slice) and _namespace(node.value):
            found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Compare)
            and _private_constant(node.left)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
            and any(_namespace(c) for c in node.comparators)
        ):
            found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            if isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"):
                continue
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    roots = [Path(a) for a in argv if a != "-v"]
    total = 0
    for root in roots:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            hits = accesses(path)
            if hits:
                print(f"{len(hits):4d}  {path}")
                if verbose:
                    for line, text in hits:
                        print(f"        {line}: {text}")
            total += len(hits)
    print(f"{total:4d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
