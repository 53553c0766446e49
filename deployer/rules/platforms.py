"""Which platforms (``metadata.platforms``) a rule written elsewhere runs on, from what it says.

In order, the first source that names a platform wins:
1. the query: the values ``host.os.type`` is compared with (``==``, ``:``, ``in``), except
   under ``not``;
2. the rule's ``OS: Windows`` / ``OS: Linux`` / ``OS: macOS`` tags (Elastic's convention);
3. index patterns that only one platform writes (``winlogbeat-*`` → windows, ``auditbeat-*`` →
   linux, ...).
"""

from __future__ import annotations

from collections.abc import Iterable

from deployer.eql import ast
from deployer.eql.errors import EqlError

PLATFORMS = ("windows", "linux", "macos")
_OS_TAGS = {"os: windows": "windows", "os: linux": "linux", "os: macos": "macos"}

# Index pattern prefixes of integrations that only collect from one platform.
_INDEX_PLATFORMS: tuple[tuple[str, str], ...] = (
    ("winlogbeat-", "windows"),
    ("logs-windows.", "windows"),
    ("logs-system.security", "windows"),
    ("logs-system.system", "windows"),
    ("logs-system.application", "windows"),
    ("auditbeat-", "linux"),
    ("logs-auditd", "linux"),
    ("logs-auditd_manager.", "linux"),
    ("logs-system.auth", "linux"),
    ("logs-system.syslog", "linux"),
)


def infer_platforms(query: object, tags: object, index: object) -> list[str]:
    """The platforms the rule runs on, in PLATFORMS order; [] when nothing says."""
    found = set(_from_query(query)) if isinstance(query, str) else set()
    if not found and isinstance(tags, list):
        found = {
            _OS_TAGS[t.strip().lower()] for t in tags if isinstance(t, str) and t.strip().lower() in _OS_TAGS
        }
    if not found and isinstance(index, list):
        found = {
            platform
            for pattern in index
            if isinstance(pattern, str)
            for prefix, platform in _INDEX_PLATFORMS
            if pattern.startswith(prefix)
        }
    return [p for p in PLATFORMS if p in found]


def _from_query(query: str) -> Iterable[str]:
    from deployer.eql import parser

    try:
        tree = parser.parse(query)
    except EqlError:
        return []
    out: list[str] = []
    _collect(tree, False, out)
    return out


def _collect(node: ast.Node, negated: bool, out: list[str]) -> None:
    if isinstance(node, ast.Not):
        _collect(node.operand, not negated, out)
        return
    if not negated:
        values: list[ast.Node] = []
        if isinstance(node, ast.Comparison) and node.op == "==":
            if _is_os_type(node.left):
                values = [node.right]
            elif _is_os_type(node.right):
                values = [node.left]
        elif isinstance(node, ast.InList) and not node.op.startswith("not") and _is_os_type(node.expr):
            values = list(node.values)
        elif (
            isinstance(node, ast.PatternMatch)
            and node.op in (":", "like", "like~")
            and _is_os_type(node.expr)
        ):
            values = list(node.patterns)
        for value in values:
            if isinstance(value, ast.StringLiteral) and value.value.lower() in PLATFORMS:
                out.append(value.value.lower())
    for child in node.children():
        _collect(child, negated, out)


def _is_os_type(node: ast.Node) -> bool:
    return isinstance(node, ast.Field) and node.name == "host.os.type"
