"""The domain imports nothing but the standard library and itself (style principle 1)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[1] / "src" / "portner" / "domain"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_domain_imports_only_the_standard_library() -> None:
    offenders = {}
    for path in sorted(DOMAIN.glob("*.py")):
        bad = {
            name
            for name in _imports(path)
            if name.split(".")[0] not in sys.stdlib_module_names
            and not name.startswith("portner.domain")
            and name != "__future__"
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
    assert len(list(DOMAIN.glob("*.py"))) >= 6  # the check looked at the real package
