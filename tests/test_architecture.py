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


SOURCE = DOMAIN.parent
TESTS = Path(__file__).resolve().parent


def _waits_for(tree: ast.AST) -> list[int]:
    """Lines that use asyncio.wait_for: by attribute (on any name asyncio is imported as) or
    imported by name."""
    aliases = {"asyncio"} | {
        alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names if alias.name == "asyncio" and alias.asname
    }
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "wait_for"
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            lines.append(node.lineno)
        elif (isinstance(node, ast.ImportFrom) and node.module == "asyncio"
              and any(alias.name == "wait_for" for alias in node.names)):
            lines.append(node.lineno)
    return lines


def test_no_code_waits_with_asyncio_wait_for() -> None:
    """On Python 3.11 `asyncio.wait_for` loses a cancellation when its awaitable finishes in the
    same loop pass (CPython gh-86296, fixed in 3.12): a cancelled task carries on. The lock
    fleet's leader did so in CI, and its test waited for it to stop until CI's time ran out.
    `async with asyncio.timeout(...)` has no such race."""
    files = sorted([*SOURCE.rglob("*.py"), *TESTS.rglob("*.py")])
    offenders = [f"{path}:{line}" for path in files
                 for line in _waits_for(ast.parse(path.read_text(encoding="utf-8")))]
    assert offenders == []
    assert len(files) >= 150  # the check looked at the real packages


def test_the_wait_for_check_finds_every_spelling() -> None:
    spellings = ["await asyncio.wait_for(x, 1)", "import asyncio as aio\nawait aio.wait_for(x, 1)",
                 "from asyncio import wait_for"]
    assert [bool(_waits_for(ast.parse(code))) for code in spellings] == [True, True, True]
    assert _waits_for(ast.parse("async with asyncio.timeout(1):\n    await x")) == []
